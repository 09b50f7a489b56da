# shellcheck shell=bash
# What the launch scripts share; each sources it after setting SCRIPT (its own file name).
#   die MESSAGE     one line on stderr naming the script, exit 2
#   need NAME...    die unless every named variable is set
#   run CMD...      run it, or with DRY_RUN=1 print it (shell-quoted) instead
#   train_args      the array TRAIN_ARGS: -m adcl.train with CONFIG[:CONFIG_ARG], WORKDIR,
#                   DATA_DIR (or its older name TFDS_DATA_DIR) and EXTRA_FLAGS, after
#                   checking that CONFIG exists

die() { echo "$SCRIPT: error: $*" >&2; exit 2; }
need() {
  local name
  for name in "$@"; do
    [[ -n "${!name:-}" ]] || die "set $name (see the top of launch/$SCRIPT)"
  done
}
run() {
  if [[ "${DRY_RUN:-0}" == 1 ]]; then printf '%q' "$1"; printf ' %q' "${@:2}"; echo; else "$@"; fi
}
train_args() {
  need CONFIG WORKDIR
  [[ -f "$ROOT/${CONFIG#"$ROOT"/}" || -f "$CONFIG" ]] || die "CONFIG=$CONFIG: no such file"
  TRAIN_ARGS=(-m adcl.train "--config=$CONFIG${CONFIG_ARG:+:$CONFIG_ARG}" "--workdir=$WORKDIR")
  local data_dir="${DATA_DIR:-${TFDS_DATA_DIR:-}}"
  [[ -n "$data_dir" ]] && TRAIN_ARGS+=("--config.data.data_dir=$data_dir")
  if [[ -n "${EXTRA_FLAGS:-}" ]]; then
    local extra
    read -r -a extra <<< "$EXTRA_FLAGS"
    TRAIN_ARGS+=("${extra[@]}")
  fi
}
