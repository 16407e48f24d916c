#!/usr/bin/env bash
# Cross-compiles the whole workspace for x86_64-pc-windows-gnu and runs its tests under Wine,
# on Debian 12 (bookworm) x86_64, as root. How: Debian's rustc-web/cargo-web 1.96 with the
# matching std sources (rust-web-src) build std for Windows (-Zbuild-std, hence RUSTC_BOOTSTRAP=1,
# confined to this script); MinGW-w64 links; Wine 8 runs the test binaries, with a stub
# bcryptprimitives.dll (scripts/windows/bcryptprimitives.c) that Wine 8 lacks.
# Separate target dir (target/windows) and Wine prefix (target/wine-prefix): no clash with the
# Linux build. Closing line: "windows tests: N passed, M failed, K ignored"; exit status non-zero
# on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET=x86_64-pc-windows-gnu

# 1. Toolchain, only what is missing.
need=(rustc-web cargo-web rust-web-src gcc-mingw-w64-x86-64-posix binutils-mingw-w64-x86-64 wine wine64)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. Debian's cargo/rustc (1.96, matching /usr/lib/rustlib/src), not rustup's: PATH without
#    ~/.cargo/bin, so rust-toolchain.toml is not consulted.
export PATH=/usr/bin:/bin:/usr/sbin:/sbin
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
unset RUSTUP_TOOLCHAIN RUSTFLAGS CARGO_BUILD_TARGET
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="$ROOT/target/windows"
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=wine
export WINEPREFIX="$ROOT/target/wine-prefix" WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
ZBS=-Zbuild-std=std,panic_abort
echo "== $(/usr/bin/cargo --version), $(/usr/bin/rustc --version)"

# 3. Wine prefix (once) and the bcryptprimitives stub (rebuilt when its source changes).
if [ ! -f "$WINEPREFIX/system.reg" ]; then
  echo "== wineboot -i ($WINEPREFIX)"
  mkdir -p "$WINEPREFIX"
  wineboot -i >/dev/null 2>&1
  wineserver -w
fi
stub="$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll"
if [ ! -f "$stub" ] || [ scripts/windows/bcryptprimitives.c -nt "$stub" ]; then
  echo "== building stub bcryptprimitives.dll"
  x86_64-w64-mingw32-gcc -O2 -shared -s -o "$stub" scripts/windows/bcryptprimitives.c -ladvapi32
fi
# One wineserver for the whole run: with its default 3 s linger, a test binary starting just as
# it exits got "wine client error:0: recvmsg: Connection reset by peer".
# Its helper processes (services.exe, winedevice.exe) then live as long as it does: start them
# here, away from the test output pipe, or `tee` would never see that pipe close.
wineserver -p
wine cmd /c exit </dev/null >/dev/null 2>&1 || true
trap 'wineserver -k >/dev/null 2>&1 || true' EXIT

# 4. watchpost.exe must ship alone: only Windows system DLLs may be imported.
echo "== cargo build watchpost.exe"
cargo build -p watchpost --bin watchpost --target $TARGET $ZBS --locked
exe="$CARGO_TARGET_DIR/$TARGET/debug/watchpost.exe"
dlls=$(x86_64-w64-mingw32-objdump -p "$exe" | awk '/DLL Name:/ { print $3 }' | sort -fu)
echo "imports: $(echo $dlls)"
bad=$(echo "$dlls" | grep -viE '^(kernel32|kernelbase|ntdll|advapi32|bcrypt|bcryptprimitives|ws2_32|userenv|msvcrt|ucrtbase|wevtapi|user32|shell32|wtsapi32|ole32|oleaut32|secur32|crypt32|ncrypt|iphlpapi|dbghelp|synchronization|api-ms-win-[a-z0-9-]+)\.dll$' || true)
if [ -n "$bad" ]; then
  echo "error: watchpost.exe imports non-system DLLs: $(echo $bad)" >&2
  exit 1
fi

# 5. Tests under Wine.
echo "== cargo test --workspace --target $TARGET (under wine)"
log=$(mktemp)
trap 'rm -f "$log"; wineserver -k >/dev/null 2>&1 || true' EXIT
set +e
cargo test --workspace --target $TARGET $ZBS --locked --no-fail-fast 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
awk -v rc="$rc" '/^test result:/ { p += $4; f += $6; i += $8 } END {
  printf "windows tests: %d passed, %d failed, %d ignored\n", p, f, i; exit (rc != 0 || p == 0 || f > 0) }' "$log"
