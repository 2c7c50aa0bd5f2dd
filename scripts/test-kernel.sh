#!/usr/bin/env bash
# Run the test suite (or a command) under another Linux kernel, booted with
# virtme-ng over this checkout.
#
#   bash scripts/test-kernel.sh [OPTIONS] KERNEL [PYTEST ARGS...]
#
#   KERNEL   6.1     Debian 12's stock kernel (package linux-image-amd64)
#            6.12    bookworm-security's linux-image-6.12-amd64 (has the
#                    kernel.io_uring_disabled sysctl, 6.6+)
#            X.Y     linux-image-X.Y-amd64; or a package name linux-image-...
#            PATH    a vmlinuz file (with a /); modules in /lib/modules/VERSION
#   --sysctl NAME=VALUE  set in the guest before the run (repeatable), e.g.
#                    --sysctl kernel.io_uring_disabled=2; a missing sysctl fails
#   --user USER      run pytest/the command as USER (setpriv; HOME=/tmp), e.g.
#                    nobody for kernel.io_uring_disabled=1; sysctls are set as root
#   --env NAME=VALUE an environment variable for pytest/the command (repeatable)
#   --cmd 'SHELL CMD'  run this with bash -c instead of pytest (no PYTEST ARGS)
#   --results DIR    where results land (default .kernel-results/LABEL/)
#   --append KARG    extra kernel command line argument (repeatable)
#   --verbose        show the guest's kernel console
#   env: VNG_VERSION (1.42), KERNEL_TEST_MEMORY (2G), KERNEL_TEST_CPUS (all)
#
# Paths in PYTEST ARGS are relative to the checkout.  The guest runs
# `.venv/bin/python -m pytest -p no:cacheprovider --junitxml=... ARGS` in the
# checkout; the exit status is pytest's (or the command's); 125 means the run
# never got there (no boot, a sysctl missing).  The results dir, readable on
# the host afterwards, holds junit.xml, uname (the guest's uname -r), status,
# times, guest.sh (what ran) and console.log (everything printed).
#
# What it does, and facts that cost time to find:
# - As root with apt-get, installs qemu-system-x86, busybox-static (virtme-ng
#   needs it), file, python3-venv and the kernel package; virtme-ng (pinned,
#   PyPI) goes into its own venv .venv-vng, whose bin/ must be on PATH (vng
#   runs virtme-run by name).  Runs `scripts/setup.sh test` only if .venv is
#   missing (never reinstalls the package: the guest imports the host's
#   editable install).
# - The guest's root is the host's / over read-only 9p (Debian 12 has no
#   virtiofsd virtme-ng accepts, so --force-9p skips trying); virtme-ng
#   overlays /tmp, /var, /etc, ... (writes stay in guest RAM); the checkout is
#   made writable the same way (--overlay-rwdir: pytest writes __pycache__,
#   .hypothesis), invisible to the host; only the results dir is a real
#   read-write mount (--rwdir).
# - linux-image-cloud-amd64 lacks 9p (CONFIG_NET_9P unset); linux-image-amd64
#   has it as modules.  No 5.x kernel package is reachable from Debian 12.
# - /dev/kvm of kind kvm_pvm (/sys/module/kvm_pvm) cannot run a stock kernel:
#   then (or without a usable /dev/kvm) this boots under TCG (--disable-kvm).
# - The kernel package pulls in udev, and virtme-ng-init (1.42) always runs a
#   udev coldplug when the root has systemd-udevd; it has no option to skip it,
#   and without udev there are no /dev/virtio-ports links, so the command runs
#   on the console and its exit status is lost.  The coldplug's cost (8-19 s
#   per TCG boot) is the modules udev loads for q35's devices (kvm, ahci and
#   libata, crypto, input, watchdogs): they are refused with module_blacklist=
#   below, which leaves ~3.5 s.  The status is also written to the results
#   dir and read back from there, whatever vng returns.
# - Under TCG (2 host cores) a boot takes 13-14 s to the command, then
#   starting pytest ~25-35 s (imports over uncached 9p), then the tests run
#   ~10x slower than on the host.
# - --user: the venv's interpreter may live under /root (0700, e.g. pyenv);
#   the guest gives o+x to the directories above it and the checkout (on an
#   overlay where / is read-only) so that the user can run it.
# - vng's stdout/stderr go through a pipe (tee): qemu opens /proc/self/fd/1
#   once per virtio port, so with stdout a regular file the ports overwrite
#   each other's output.
set -euo pipefail
caller=$PWD
cd "$(dirname "$0")/.."
checkout=$PWD

usage() { sed -n '5,21s/^# \{0,1\}//p' "$0"; }

sysctls=()
envs=()
user=""
cmd=""
results=""
appends=()
verbose=()
while (($#)); do
    case $1 in
        --sysctl) sysctls+=("$2"); shift 2 ;;
        --sysctl=*) sysctls+=("${1#*=}"); shift ;;
        --env) envs+=("$2"); shift 2 ;;
        --env=*) envs+=("${1#*=}"); shift ;;
        --user) user=$2; shift 2 ;;
        --user=*) user=${1#*=}; shift ;;
        --cmd) cmd=$2; shift 2 ;;
        --cmd=*) cmd=${1#*=}; shift ;;
        --results) results=$2; shift 2 ;;
        --results=*) results=${1#*=}; shift ;;
        --append) appends+=("$2"); shift 2 ;;
        --append=*) appends+=("${1#*=}"); shift ;;
        -v | --verbose) verbose=(--verbose); shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; break ;;
        -*) echo "test-kernel: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) break ;;
    esac
done
if (($# == 0)); then
    usage >&2
    exit 2
fi
kernel=$1
shift
if [[ -n $cmd ]] && (($#)); then
    echo "test-kernel: --cmd takes no pytest arguments" >&2
    exit 2
fi
for s in "${sysctls[@]}"; do
    [[ $s == ?*=* ]] || { echo "test-kernel: --sysctl wants NAME=VALUE, got $s" >&2; exit 2; }
done
for e in "${envs[@]}"; do
    [[ $e =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || { echo "test-kernel: --env wants NAME=VALUE, got $e" >&2; exit 2; }
done

# Which kernel: a file, or a Debian package.
kimg=""
pkg=""
case $kernel in
    */* | vmlinu*)
        kimg=$(cd "$caller" && realpath "$kernel")
        [[ -f $kimg ]] || { echo "test-kernel: no kernel image $kernel" >&2; exit 2; }
        ;;
    6.1) pkg=linux-image-amd64 ;;
    linux-image-*) pkg=$kernel ;;
    *) pkg=linux-image-$kernel-amd64 ;;
esac

# System packages (as root).
packages=(qemu-system-x86 busybox-static file python3-venv)
[[ -n $pkg ]] && packages+=("$pkg")
bash scripts/apt-install.sh "${packages[@]}"
if [[ -n $pkg ]]; then
    # A metapackage (linux-image-amd64, linux-image-6.12-amd64) depends on
    # the image package linux-image-VERSION, whose kernel is /boot/vmlinuz-VERSION.
    image=$pkg
    if [[ ! -f /boot/vmlinuz-${pkg#linux-image-} ]]; then
        deps=$(dpkg-query -W -f='${Depends}' "$pkg" 2>/dev/null) || {
            echo "test-kernel: package $pkg is not installed" >&2
            exit 2
        }
        image=${deps%%[ ,]*}
    fi
    kimg=/boot/vmlinuz-${image#linux-image-}
    [[ -f $kimg ]] || { echo "test-kernel: $pkg gives no $kimg" >&2; exit 2; }
fi

# virtme-ng in its own venv; the project's venv as it is.
vng_version=${VNG_VERSION:-1.42}
if ! .venv-vng/bin/python -c "import importlib.metadata as m, sys
sys.exit(m.version('virtme-ng') != '$vng_version')" 2>/dev/null; then
    python3 -m venv .venv-vng
    .venv-vng/bin/python -m pip install -q "virtme-ng==$vng_version"
fi
export PATH="$checkout/.venv-vng/bin:$PATH"
if [[ ! -x .venv/bin/python ]]; then
    bash scripts/setup.sh test
fi

# The results dir, shared read-write with the guest.
if [[ -z $results ]]; then
    label=$kernel
    [[ $kernel == */* ]] && label=$(basename "$kernel")
    for s in "${sysctls[@]}"; do label+="-${s##*.}"; done
    [[ -n $user ]] && label+="-$user"
    results=$checkout/.kernel-results/${label//[^A-Za-z0-9._-]/-}
fi
results=$(cd "$caller" && mkdir -p "$results" && realpath "$results")
if [[ $results == *[=,\ ]* ]]; then
    echo "test-kernel: results dir $results: no '=', ',' or spaces please" >&2
    exit 2
fi
rm -f "$results"/{junit.xml,uname,status,times,guest.sh,console.log}

# The guest's side: sysctls (as root), then pytest or the command, maybe as
# another user; its status and JUnit file land in the results dir.
if [[ -n $cmd ]]; then
    run=(bash -c "$cmd")
else
    run=(.venv/bin/python -m pytest -p no:cacheprovider --junitxml=/tmp/test-kernel-junit.xml "$@")
fi
# shellcheck disable=SC2016  # single quotes: the guest expands these
{
    echo '#!/bin/bash'
    echo "# written by scripts/test-kernel.sh $(printf '%q ' "$kernel" "$@")"
    echo "set -u"
    printf 'R=%q\n' "$results"
    printf 'cd %q || exit 125\n' "$checkout"
    echo 'date +%s.%N > "$R/times"'
    echo 'uname -r > "$R/uname"'
    echo 'echo "test-kernel: guest kernel $(uname -r)"'
    echo 'fail() { echo "test-kernel: $*" >&2; echo 125 > "$R/status"; exit 125; }'
    for s in "${sysctls[@]}"; do
        name=${s%%=*}
        printf 'n=%q f=/proc/sys/%q v=%q\n' "$name" "${name//.//}" "${s#*=}"
        echo '[[ -e $f ]] || fail "no sysctl $n in this kernel"'
        echo 'echo "$v" > "$f" || fail "cannot set $n"'
        echo 'echo "test-kernel: sysctl $n = $(cat "$f")"'
    done
    for e in "${envs[@]}"; do
        printf 'export %s=%q\n' "${e%%=*}" "${e#*=}"
    done
    if [[ -n $user ]]; then
        printf 'u=%q\n' "$user"
        echo 'id "$u" >/dev/null || fail "no user $u"'
        # The user must get through every directory above the interpreter
        # (e.g. /root/.pyenv/...: /root is 0700) and the checkout: o+x,
        # made writable first with an overlay where the guest's / is read-only.
        cat <<'EOF'
unlock() {
    local d="" o part mp
    IFS=/ read -ra parts <<<"${1#/}"
    for part in "${parts[@]}"; do
        d+=/$part
        [[ -d $d ]] || break
        [[ $(stat -c %A "$d") == *[xt] ]] && continue
        chmod o+x "$d" 2>/dev/null && continue
        while read -r _ mp _; do
            [[ $mp == "$d"/* ]] && fail "cannot open $d to $u: $mp is mounted below it"
        done </proc/mounts
        o=/run/tmp/unlock$d
        mkdir -p "$o/upper" "$o/work"
        mount -t overlay overlay -o "lowerdir=$d,upperdir=$o/upper,workdir=$o/work" "$d" &&
            chmod o+x "$d" || fail "cannot open $d to $u"
    done
}
unlock "$(readlink -f .venv/bin/python)"
unlock "$PWD"
EOF
        echo 'drop=(setpriv --reuid="$u" --regid="$(id -g "$u")" --init-groups)'
        printf '"${drop[@]}" env HOME=/tmp PYTHONDONTWRITEBYTECODE=1 %s\n' "$(printf '%q ' "${run[@]}")"
    else
        printf '%s\n' "$(printf '%q ' "${run[@]}")"
    fi
    echo 'st=$?'
    echo 'date +%s.%N >> "$R/times"'
    echo '[[ -f /tmp/test-kernel-junit.xml ]] && cp /tmp/test-kernel-junit.xml "$R/junit.xml"'
    echo 'echo $st > "$R/status"'
    echo 'exit $st'
} >"$results/guest.sh"

kvm=()
accel=KVM
if [[ -e /sys/module/kvm_pvm || ! -w /dev/kvm ]]; then
    kvm=(--disable-kvm)
    accel=TCG
fi
# Modules udev would load for q35's devices, none of them needed here.
noload=kvm_amd,kvm_intel,kvm,irqbypass,ccp,ahci,libahci,libata,scsi_mod,scsi_common
noload+=,sr_mod,cdrom,sg,crct10dif_pclmul,crct10dif_common,crc32_pclmul,crc32c_intel
noload+=,ghash_clmulni_intel,sha512_ssse3,sha512_generic,sha256_ssse3,sha1_ssse3
noload+=,aesni_intel,crypto_simd,cryptd,iTCO_wdt,iTCO_vendor_support,intel_pmc_bxt
noload+=,i6300esb,watchdog,evdev,psmouse,serio_raw,pcspkr,i2c_i801,i2c_smbus,lpc_ich
noload+=,qemu_fw_cfg,button
vng_args=(--run "$kimg" "${kvm[@]}" --force-9p "${verbose[@]}"
    --memory "${KERNEL_TEST_MEMORY:-2G}"
    --overlay-rwdir "$checkout" --rwdir "$results" --cwd "$checkout"
    --append "module_blacklist=$noload")
[[ -n ${KERNEL_TEST_CPUS:-} ]] && vng_args+=(--cpus "$KERNEL_TEST_CPUS")
for a in "${appends[@]}"; do vng_args+=(--append "$a"); done

echo "test-kernel: booting $kimg ($accel) with virtme-ng $vng_version; results in $results"
start=$(date +%s.%N)
set +e
vng "${vng_args[@]}" --exec "bash $results/guest.sh" </dev/null 2>&1 | tee "$results/console.log"
vng_status=${PIPESTATUS[0]}
set -e
end=$(date +%s.%N)

if [[ -s $results/status ]]; then
    status=$(<"$results/status")
    if [[ $status != "$vng_status" ]]; then
        echo "test-kernel: note: vng exited $vng_status, the guest command $status"
    fi
else
    echo "test-kernel: the guest never reported a status (vng exited $vng_status)"
    status=125
fi
python3 - "$results" "$start" "$end" "$status" <<'EOF'
import os, sys
import xml.etree.ElementTree as ET

results, start, end, status = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]

def read(name):
    try:
        with open(os.path.join(results, name)) as f:
            return f.read().split()
    except OSError:
        return []

uname = read("uname")
times = [float(t) for t in read("times")]
line = f"test-kernel: guest {uname[0] if uname else '?'}"
if times:
    line += f", boot {times[0] - start:.1f} s"
if len(times) > 1:
    line += f", run {times[1] - times[0]:.1f} s"
line += f", total {end - start:.1f} s, exit {status}"
print(line)
junit = os.path.join(results, "junit.xml")
if os.path.exists(junit):
    root = ET.parse(junit).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is not None:
        a = {k: suite.get(k, "0") for k in ("tests", "failures", "errors", "skipped", "time")}
        print(f"test-kernel: {a['tests']} tests, {a['failures']} failures, {a['errors']} errors,"
              f" {a['skipped']} skipped in {float(a['time']):.1f} s; {junit}")
EOF
exit "$status"
