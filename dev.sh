#!/usr/bin/env bash
# One entry point for set-up on a fresh machine.
#   ./dev.sh demo   create .venv if needed, install sentinel, run `sentinel demo`
#   ./dev.sh test   also install test tools and system packages, then ruff, mypy --strict, pytest
set -euo pipefail
cd "$(dirname "$0")"
venv=.venv

ensure_venv() {
    local extras=$1 stamp="$venv/.installed-$1"
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        "$venv/bin/pip" install -q --disable-pip-version-check -e ".$extras"
        touch "$stamp"
    fi
}

ensure_system_packages() {
    # The end-to-end tests drive a real nginx, HAProxy and etcd; install them when missing.
    local missing=()
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
    command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
    # The dns probe's tests run dnsmasq (the binary alone: no system service to start).
    command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || missing+=(dnsmasq-base)
    # The IPVS tests boot a kernel that has IPVS under QEMU (tests/sinks/ipvs fetches the kernel).
    command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
    # The cluster tests start a real etcd (3.4, the v3 JSON gateway) on loopback.
    command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
    # The self-suspicion test blackholes a network namespace's link with nft (nftables).
    command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || missing+=(nftables)
    # The docs' IPVS example is loaded by a test, and the loader checks that the sink's
    # default command exists (the IPVS tests themselves run ipvsadm inside a VM).
    command -v ipvsadm >/dev/null 2>&1 || [ -x /usr/sbin/ipvsadm ] || missing+=(ipvsadm)
    # systemd-analyze checks examples/systemd/sentinel.service; promtool (Debian's
    # prometheus package, 19 MB, the only one that ships it) checks /metrics and the alerts.
    command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
    command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
    # The dashboard tests drive Debian's chromium through its chromium-driver (selenium gets
    # the driver by path: nothing downloads a browser or a driver).
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
    # Debian builds nginx's stream {} as a module; the stream-context test needs it.
    if [ -d /usr/lib/nginx ] || [[ " ${missing[*]} " == *" nginx "* ]]; then
        [ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || missing+=(libnginx-mod-stream)
    fi
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing ${missing[*]} (Debian packages) for the end-to-end tests" >&2
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
        if [[ " ${missing[*]} " == *" prometheus "* ]]; then  # only promtool is wanted
            systemctl disable --now prometheus >/dev/null 2>&1 || true
        fi
    else
        echo "note: ${missing[*]} missing and cannot be installed here; those tests will skip" >&2
    fi
}

case "${1:-}" in
    demo)
        ensure_venv ""
        shift
        exec "$venv/bin/sentinel" demo "$@"
        ;;
    test)
        ensure_system_packages
        ensure_venv "[dev]"
        shift
        lint_dirs=()
        for d in sentinel tests bench examples; do [ -d "$d" ] && lint_dirs+=("$d"); done
        "$venv/bin/ruff" check "${lint_dirs[@]}"
        "$venv/bin/mypy" --strict sentinel
        exec "$venv/bin/pytest" -q -p no:cacheprovider "$@"
        ;;
    *)
        echo "usage: ./dev.sh demo|test [args]" >&2
        exit 2
        ;;
esac
