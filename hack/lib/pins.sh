# Shared by the build scripts that cache Go-built tools outside the clone.
# Source it; it defines functions only.

# pin_hash RECIPE DIR...: 16 hex digits naming a cache directory, from the recipe number, the Go
# version and the go.mod/go.sum of each module DIR, so any pin change builds afresh.
pin_hash() {
  local recipe=$1 dir
  shift
  {
    echo "recipe=$recipe"
    go env GOVERSION
    for dir in "$@"; do
      cat "$dir/go.mod" "$dir/go.sum"
    done
  } | sha256sum | cut -c1-16
}

# prune_pins PARENT KEEP LOG: remove PARENT/<hash>/ directories of older pins except KEEP,
# unless a process still runs from one. LOG is a function that prints a message.
prune_pins() {
  local parent=$1 keep=$2 log=$3 d
  for d in "$parent"/*/; do
    d="${d%/}"
    [[ "$d" == "$keep" ]] && continue
    if ! pgrep -f "^$d/" >/dev/null; then
      "$log" "removing old pin dir $d"
      rm -rf "$d"
    fi
  done
}
