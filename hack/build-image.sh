#!/usr/bin/env bash
# Build the operator image without a container engine, from Debian's packages and the locked
# wheels, into an OCI archive:
#
#   dist/hybridgpu-<version>.oci.tar        the image (an OCI layout in a tar: skopeo's
#                                           "oci-archive:" transport; tag <version>)
#   dist/hybridgpu-<version>.cdx.json       its SBOM (CycloneDX), also in the image
#   dist/image.json                         name, tag, digest, archive: what tests and the
#                                           chart install use
#
# How:
#   1. mmdebstrap extracts python3 and ca-certificates with their dependencies (no maintainer
#      scripts run: nothing executes inside the tree) from the apt sources this machine uses;
#      the CA bundle, passwd/group (nonroot = 65532) and dpkg status.d are written here.
#   2. pip installs requirements/runtime.txt (hashes required, wheels only, for CPython 3.11
#      on glibc 2.36, Debian 12's) and the project's wheel into /usr/local/lib/python3.11/
#      dist-packages; /usr/local/bin/hybridgpu starts hybridgpu.cli; the image's Python
#      compiles everything to hash-based bytecode (under bwrap, so nothing of this machine's).
#   3. cyclonedx-py writes the SBOM of the Python set; the Debian packages are added to it.
#   4. One layer, GNU tar with sorted names, owner 0, every mtime SOURCE_DATE_EPOCH; umoci
#      adds it and the config (user 65532, entrypoint `hybridgpu run`, OCI labels).
#
# Reproducible: SOURCE_DATE_EPOCH defaults to the time of the last commit of the image's
# inputs (INPUTS below), so the same inputs and the same Debian packages give the same digest
# (hack/check-image-reproducible.sh builds twice and compares).
#
# Needs (Debian packages): mmdebstrap umoci bubblewrap; the venv (make venv) for pip and cyclonedx-py.
# Usage: hack/build-image.sh  (or make image); env: IMAGE_NAME, HYBRIDGPU_APT_SOURCES,
#        SOURCE_DATE_EPOCH, HYBRIDGPU_IMAGE_WORK (scratch, default build/image), DIST (dist).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
started=$(date +%s)
log() { echo "[build-image] +$(($(date +%s) - started))s $*" >&2; }

PY="$REPO/.venv/bin/python"
for tool in mmdebstrap umoci bwrap tar; do
  command -v "$tool" >/dev/null || { log "missing $tool (make image-tools)"; exit 1; }
done
[[ -x "$PY" ]] || { log "no venv: run make venv"; exit 1; }

VERSION="$("$PY" -c 'import hybridgpu; print(hybridgpu.__version__)')"
IMAGE_NAME="${IMAGE_NAME:-ghcr.io/hybridgpu/hybridgpu}"
SOURCE_URL="${SOURCE_URL:-https://github.com/hybridgpu/hybridgpu}"
SUITE=bookworm
PYVER=3.11
# Debian 12's glibc is 2.36: every manylinux tag up to that one (pip does not expand
# --platform by itself), and the legacy aliases.
PLATFORMS=()
for minor in $(seq 36 -1 5); do PLATFORMS+=(--platform "manylinux_2_${minor}_x86_64"); done
PLATFORMS+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64)
PLATFORMS+=(--platform manylinux1_x86_64 --platform linux_x86_64)
ARCH=amd64
# What the image is made of, here: a commit that touches none of these leaves the image (and
# its digest) as it was. The Makefile's dist/image.json rule lists the same.
INPUTS=(operator requirements/runtime.txt pyproject.toml README.md LICENSE
  hack/build-image.sh hack/image_sbom.py)
# The source revision and time: the last commit of those inputs.
REVISION="$(git log -1 --format=%H -- "${INPUTS[@]}" 2>/dev/null || true)"
if [[ -z "${SOURCE_DATE_EPOCH:-}" ]]; then
  SOURCE_DATE_EPOCH="$(git log -1 --format=%ct -- "${INPUTS[@]}" 2>/dev/null || true)"
  SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-0}"
fi
export SOURCE_DATE_EPOCH
CREATED="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)"
REVISION="${REVISION:-unknown}"
if [[ -z "${HYBRIDGPU_APT_SOURCES:-}" ]]; then
  for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    [[ -s "$f" ]] && { HYBRIDGPU_APT_SOURCES="$f"; break; }
  done
fi
WORK="${HYBRIDGPU_IMAGE_WORK:-$REPO/build/image}"
DIST="${DIST:-$REPO/dist}"
ARCHIVE="$DIST/hybridgpu-$VERSION.oci.tar"
SBOM="$DIST/hybridgpu-$VERSION.cdx.json"

rm -rf "$WORK"
mkdir -p "$WORK" "$DIST"
ROOTFS="$WORK/rootfs"
SITE="$ROOTFS/usr/local/lib/python$PYVER/dist-packages"

# 1. The Debian part. The extract hook records each package's control fields where scanners
#    (syft, trivy) look for distroless images' packages, and lists them for the SBOM.
log "rootfs: python3 ca-certificates ($SUITE, from $HYBRIDGPU_APT_SOURCES)"
mmdebstrap --quiet --variant=extract --include=python3,ca-certificates --format=directory \
  --architectures="$ARCH" \
  --extract-hook='mkdir -p "$1/var/lib/dpkg/status.d"; for deb in "$1"/var/cache/apt/archives/*.deb; do pkg=$(dpkg-deb -f "$deb" Package); dpkg-deb -f "$deb" Package Version Architecture Source Maintainer Homepage > "$1/var/lib/dpkg/status.d/$pkg"; done' \
  "$SUITE" "$ROOTFS" "$HYBRIDGPU_APT_SOURCES"

# What the skipped maintainer scripts would have done that the operator needs, and no more:
# the CA bundle (update-ca-certificates: every Mozilla certificate), users, empty mount points.
cat "$ROOTFS"/usr/share/ca-certificates/mozilla/*.crt >"$ROOTFS/etc/ssl/certs/ca-certificates.crt"
printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
  'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$ROOTFS/etc/passwd"
printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' >"$ROOTFS/etc/group"
# Device nodes are the runtime's (it mounts /dev); an image carries none.
rm -rf "$ROOTFS/dev" && mkdir "$ROOTFS/dev"
mkdir -p "$ROOTFS"/{proc,sys,root,home/nonroot,usr/local/bin}
chmod 0700 "$ROOTFS/root" "$ROOTFS/home/nonroot"
chmod 1777 "$ROOTFS/tmp"
# Documentation but the licences, translations, apt's and dpkg's leftovers.
find "$ROOTFS/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
find "$ROOTFS/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$ROOTFS"/usr/share/{man,info,locale,lintian,bug} "$ROOTFS"/var/cache/* \
  "$ROOTFS"/var/log/* "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/etc/apt

# 2. The Python part: exactly the runtime lock, and the project.
log "python: requirements/runtime.txt and the hybridgpu wheel"
rm -rf "$WORK/wheel"
SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" "$PY" -m pip wheel -q --no-deps --no-build-isolation \
  -w "$WORK/wheel" "$REPO"
rm -rf "$REPO/build/lib" "$REPO/build/bdist."*
WHEEL="$(ls "$WORK"/wheel/hybridgpu-*.whl)"
{
  cat requirements/runtime.txt
  echo "hybridgpu @ file://$WHEEL --hash=sha256:$(sha256sum "$WHEEL" | cut -d' ' -f1)"
} >"$WORK/image-requirements.txt"
"$PY" -m pip install -q --disable-pip-version-check --no-deps --require-hashes \
  --only-binary=:all: --no-compile --target "$SITE" \
  --implementation cp --python-version "$PYVER" --abi "cp${PYVER/./}" "${PLATFORMS[@]}" \
  -r "$WORK/image-requirements.txt"
# pip's console scripts name this machine's interpreter (the checkout's venv: their hashes
# in RECORD would vary with its path); the image has its own launcher. direct_url.json names
# the wheel's path here. Neither goes in, nor do their RECORD lines.
rm -rf "$SITE/bin" "$SITE"/hybridgpu-*.dist-info/direct_url.json
sed -i -E '/^(\.\.\/)*bin\//d; /direct_url\.json,/d' "$SITE"/*.dist-info/RECORD
find "$SITE" -name __pycache__ -type d -prune -exec rm -rf {} +
cat >"$ROOTFS/usr/local/bin/hybridgpu" <<'EOF'
#!/usr/bin/python3
import sys

from hybridgpu.cli import main

sys.exit(main())
EOF
chmod 0755 "$ROOTFS/usr/local/bin/hybridgpu"

# Bytecode, compiled by the image's own Python (the root filesystem is read-only at run time,
# and from source alone the operator takes five times as long to import): hash-based .pyc,
# so no timestamps, in one process for a stable order.
log "bytecode: compileall (unchecked-hash)"
mkdir -p "$ROOTFS/proc" "$ROOTFS/sys"
bwrap --unshare-all --die-with-parent --bind "$ROOTFS" / --proc /proc --dev /dev --tmpfs /tmp \
  --clearenv --setenv PATH /usr/bin:/bin -- /usr/bin/python3 -m compileall -q -j 1 \
  --invalidation-mode unchecked-hash "/usr/lib/python$PYVER" "/usr/local/lib/python$PYVER"
rm -rf "$ROOTFS/dev" && mkdir "$ROOTFS/dev"

# 3. The SBOM: the Python set from the lock (cyclonedx-py), the Debian packages beside it.
log "sbom: cyclonedx-py"
"$REPO/.venv/bin/cyclonedx-py" requirements --output-reproducible --sv 1.6 --of JSON \
  --pyproject pyproject.toml -o "$WORK/python.cdx.json" requirements/runtime.txt 2>/dev/null
"$PY" "$REPO/hack/image_sbom.py" "$WORK/python.cdx.json" "$ROOTFS/var/lib/dpkg/status.d" \
  --version "$VERSION" --suite "$SUITE" --arch "$ARCH" -o "$SBOM"
mkdir -p "$ROOTFS/usr/share/doc/hybridgpu"
cp "$SBOM" "$ROOTFS/usr/share/doc/hybridgpu/sbom.cdx.json"
cp LICENSE "$ROOTFS/usr/share/doc/hybridgpu/LICENSE"

# 4. One layer, byte for byte the same from the same inputs.
log "layer and OCI image"
chown -R -h 0:0 "$ROOTFS"
chown 65532:65532 "$ROOTFS/home/nonroot"
find "$ROOTFS" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
tar --create --file "$WORK/layer.tar" --directory "$ROOTFS" --sort=name --format=posix \
  --pax-option='exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime' \
  --mtime="@$SOURCE_DATE_EPOCH" --numeric-owner --no-acls --no-xattrs --no-selinux .
LAYOUT="$WORK/oci"
umoci init --layout "$LAYOUT"
umoci new --image "$LAYOUT:$VERSION"
umoci raw add-layer --image "$LAYOUT:$VERSION" \
  --history.created "$CREATED" --history.created_by "hack/build-image.sh" \
  --history.comment "Debian $SUITE python3 + ca-certificates; hybridgpu $VERSION, requirements/runtime.txt" \
  "$WORK/layer.tar"
labels=(
  "org.opencontainers.image.title=hybridgpu"
  "org.opencontainers.image.description=Kubernetes operator routing InferenceJobs to in-cluster GPUs or decentralized GPU networks"
  "org.opencontainers.image.source=$SOURCE_URL"
  "org.opencontainers.image.url=$SOURCE_URL"
  "org.opencontainers.image.version=$VERSION"
  "org.opencontainers.image.revision=$REVISION"
  "org.opencontainers.image.licenses=Apache-2.0"
  "org.opencontainers.image.created=$CREATED"
  "org.opencontainers.image.base.name=debian:$SUITE"
  "dev.hybridgpu.sbom=/usr/share/doc/hybridgpu/sbom.cdx.json"
)
config_args=(
  --config.user 65532:65532
  --config.entrypoint /usr/local/bin/hybridgpu --config.entrypoint run
  --config.env PATH=/usr/local/bin:/usr/bin:/bin
  --config.env HOME=/home/nonroot
  --config.env PYTHONDONTWRITEBYTECODE=1
  --config.env PYTHONUNBUFFERED=1
  --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
  --config.workingdir /home/nonroot
  --config.exposedports 8080/tcp --config.exposedports 8081/tcp
  --created "$CREATED" --author "hybridgpu maintainers" --os linux --architecture "$ARCH"
  --history.created "$CREATED" --history.created_by "hack/build-image.sh: config"
)
for label in "${labels[@]}"; do
  config_args+=(--config.label "$label" --manifest.annotation "$label")
done
umoci config --image "$LAYOUT:$VERSION" "${config_args[@]}"
umoci gc --layout "$LAYOUT"
find "$LAYOUT" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
rm -f "$ARCHIVE"
tar --create --file "$ARCHIVE" --directory "$LAYOUT" --sort=name --format=posix \
  --pax-option='exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime' \
  --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner .

"$PY" "$REPO/hack/image_sbom.py" --describe "$LAYOUT" --name "$IMAGE_NAME" --tag "$VERSION" \
  --archive "$ARCHIVE" --sbom "$SBOM" --seconds "$(($(date +%s) - started))" \
  --revision "$REVISION" --created "$CREATED" \
  -o "$DIST/image.json"
cat "$DIST/image.json"
