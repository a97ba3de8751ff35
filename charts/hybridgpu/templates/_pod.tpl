{{/* The operator Pod, shared by the Deployment (one replica) and the StatefulSet (several). */}}
{{- define "hybridgpu.podTemplate" -}}
metadata:
  labels:
    {{- include "hybridgpu.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    kubectl.kubernetes.io/default-container: operator
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "hybridgpu.serviceAccountName" . }}
  automountServiceAccountToken: true
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: operator
      image: {{ include "hybridgpu.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - --liveness=http://0.0.0.0:{{ .Values.operator.livenessPort }}/healthz
        {{- if eq .Values.operator.logLevel "debug" }}
        - --verbose
        {{- end }}
        {{- if include "hybridgpu.peering" . }}
        - --peering={{ include "hybridgpu.peeringName" . }}
        {{- if gt (int .Values.replicaCount) 1 }}
        # Distinct priorities from the StatefulSet ordinal: the highest one works, the rest wait.
        - --priority=$(HYBRIDGPU_POD_INDEX)
        {{- end }}
        {{- else }}
        # One replica and no peering objects installed: say so, rather than let Kopf look.
        - --standalone
        {{- end }}
        {{- range .Values.operator.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      env:
        - name: HYBRIDGPU_LOG_FORMAT
          value: {{ .Values.operator.logFormat | quote }}
        - name: HYBRIDGPU_METRICS_PORT
          value: {{ .Values.operator.metricsPort | quote }}
        - name: HYBRIDGPU_PROMETHEUS_URL
          value: {{ .Values.operator.prometheusUrl | quote }}
        {{- with .Values.results }}
        {{- if .bucket }}
        - name: HYBRIDGPU_RESULTS_BUCKET
          value: {{ .bucket | quote }}
        - name: HYBRIDGPU_RESULTS_ENDPOINT
          value: {{ .endpoint | quote }}
        - name: HYBRIDGPU_RESULTS_PREFIX
          value: {{ .prefix | quote }}
        - name: HYBRIDGPU_RESULTS_REGION
          value: {{ .region | quote }}
        {{- with .credentialsSecret }}
        - name: HYBRIDGPU_RESULTS_ACCESS_KEY_ID
          valueFrom:
            secretKeyRef: {name: {{ . | quote }}, key: AWS_ACCESS_KEY_ID}
        - name: HYBRIDGPU_RESULTS_SECRET_ACCESS_KEY
          valueFrom:
            secretKeyRef: {name: {{ . | quote }}, key: AWS_SECRET_ACCESS_KEY}
        {{- end }}
        {{- end }}
        {{- end }}
        {{- with .Values.operator.watchNamespaces }}
        - name: HYBRIDGPU_NAMESPACES
          value: {{ join "," . | quote }}
        {{- end }}
        {{- with .Values.operator.jobTolerations }}
        - name: HYBRIDGPU_JOB_TOLERATIONS
          value: {{ toJson . | quote }}
        {{- end }}
        {{- with .Values.operator.gpuNodeSelector }}
        - name: HYBRIDGPU_GPU_NODE_SELECTOR
          value: {{ toJson . | quote }}
        {{- end }}
        - name: HYBRIDGPU_GPU_TOLERATION
          value: {{ .Values.operator.jobGpuToleration | quote }}
        {{- with .Values.operator.jobImageAllowlist }}
        - name: HYBRIDGPU_IMAGE_ALLOWLIST
          value: {{ toJson . | quote }}
        {{- end }}
        - name: HYBRIDGPU_JOB_RUN_AS_USER
          value: {{ .Values.operator.jobRunAsUser | quote }}
        # The in-cluster runners (hybridgpu runner ...) run from the operator's own image.
        - name: HYBRIDGPU_RUNNER_IMAGE
          value: {{ include "hybridgpu.image" . | quote }}
        {{- range $task, $image := .Values.operator.runtimeImages }}
        - name: HYBRIDGPU_RUNTIME_IMAGE_{{ $task | upper | replace "-" "_" }}
          value: {{ $image | quote }}
        {{- end }}
        {{- if gt (int .Values.replicaCount) 1 }}
        - name: HYBRIDGPU_POD_INDEX
          valueFrom:
            fieldRef:
              fieldPath: metadata.labels['apps.kubernetes.io/pod-index']
        {{- end }}
        # Kopf's peer identity (POD_ID): the Pod name, stable across restarts of the same Pod.
        - name: POD_ID
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- with .Values.operator.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: metrics
          containerPort: {{ .Values.operator.metricsPort }}
          protocol: TCP
        - name: healthz
          containerPort: {{ .Values.operator.livenessPort }}
          protocol: TCP
      livenessProbe:
        httpGet:
          path: /healthz
          port: healthz
        initialDelaySeconds: 15
        periodSeconds: 20
        timeoutSeconds: 5
        failureThreshold: 3
      startupProbe:
        httpGet:
          path: /healthz
          port: healthz
        periodSeconds: 5
        failureThreshold: 36
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        # The root filesystem is read-only; Python and Kopf only need a scratch /tmp.
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
