{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "hybridgpu.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, plus the chart name unless the release already contains it. */}}
{{- define "hybridgpu.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "hybridgpu.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hybridgpu.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hybridgpu.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "hybridgpu.labels" -}}
helm.sh/chart: {{ include "hybridgpu.chart" . }}
{{ include "hybridgpu.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hybridgpu
{{- end }}

{{- define "hybridgpu.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hybridgpu.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- /* repository:tag, tag defaulting to appVersion; with a digest repository:tag@digest
(the runtime pulls by digest, the tag is there for people reading it). */ -}}
{{- define "hybridgpu.image" -}}
{{- $ref := printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $ref .Values.image.digest }}
{{- else }}
{{- $ref }}
{{- end }}
{{- end }}

{{/* Peering is on when asked for, and always with more than one replica. */}}
{{- define "hybridgpu.peering" -}}
{{- if or .Values.peering.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{- define "hybridgpu.peeringName" -}}
{{- default (include "hybridgpu.fullname" .) .Values.peering.name }}
{{- end }}

{{/* Namespaces the namespaced permissions are granted in: empty means cluster-wide. */}}
{{- define "hybridgpu.clusterwide" -}}
{{- if not .Values.operator.watchNamespaces }}true{{ end }}
{{- end }}

{{/*
Annotations of an object whose kind comes from a CRD this release installs (RoutingPolicy,
ComputeProvider, Kopf peerings). Helm maps every manifest before creating any, so while the kind
is not yet served (first install) the object is a post-install hook; it carries Helm's ownership
metadata, so the next upgrade, which renders it as an ordinary resource, adopts it.
Call with (list $ "group/version/Kind").
*/}}
{{- define "hybridgpu.crAnnotations" -}}
{{- $root := index . 0 }}
{{- if not ($root.Capabilities.APIVersions.Has (index . 1)) }}
helm.sh/hook: post-install,post-upgrade
helm.sh/hook-delete-policy: before-hook-creation
meta.helm.sh/release-name: {{ $root.Release.Name }}
meta.helm.sh/release-namespace: {{ $root.Release.Namespace }}
{{- end }}
{{- end }}
