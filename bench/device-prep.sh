#!/usr/bin/env bash
# Prepares the WebGPU benchmarks for the device tool's GPU machine (see bench/device-run.sh, which runs there): that
# machine has no Rust toolchain, nothing can be fetched there, and each call sends at most 64 MiB (the tracked tree
# plus what `carry` names). So this builds the two bench binaries here and packs them with what they need into the
# ignored folder bench/device/, checks the total against the limit, and prints the call to make:
#   - benches.tar.xz: the `backends` and `guardian_backends` bench binaries, stripped (glibc here is older than
#     the device image's, so they run there);
#   - guardian-layout.gguf: the shipped guardian's GGUF header (~15 KB). Its 130 MB model.gguf cannot travel, so
#     the guardian is timed on a stand-in with this exact layout and random weights (benches/guardian_backends.rs);
#   - libvulkan1*.deb: the Vulkan loader, unpacked there only if the image lacks one.
# Run it from the repository root after scripts/setup.sh; ~2 min with the benches already built.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
LIMIT_MIB=64
dest=bench/device
rm -rf "$dest" && mkdir -p "$dest/bin"

cargo bench --no-run 2>&1 | tee /tmp/slm-guard-bench-build.log | grep -v '^ *Compiling' || true
declare -A exe
for b in backends guardian_backends; do
  exe[$b]=$(sed -n "s|.*Executable benches/$b.rs (\(.*\))|\1|p" /tmp/slm-guard-bench-build.log | tail -1)
  [ -x "${exe[$b]}" ] || { echo "no $b bench binary in the build log" >&2; exit 1; }
  strip -o "$dest/bin/$b" "${exe[$b]}"
done
tar -C "$dest" -cf - bin | xz -9e -T1 >"$dest/benches.tar.xz"
rm -rf "$dest/bin"
"${exe[guardian_backends]}" --save-layout "$dest/guardian-layout.gguf"

# the Vulkan loader for x86-64 (the device tool's README: carried .deb files, unpacked there)
lists=/tmp/slm-guard-apt-amd64
mkdir -p "$lists/partial"
o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists="$lists")
apt-get "${o[@]}" update -qq
(cd "$dest" && apt-get "${o[@]}" download -qq libvulkan1)

# what the call sends: tracked files, untracked files git does not ignore, and the carried folder
tracked=$(git ls-files -z | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
untracked=$(git ls-files -z --others --exclude-standard | xargs -0 -r stat -c %s | awk '{s += $1} END {print s + 0}')
carried=$(du -sb "$dest" | cut -f1)
total=$((tracked + untracked + carried))
awk -v t="$tracked" -v u="$untracked" -v c="$carried" -v d="$dest" -v l="$LIMIT_MIB" 'BEGIN {
  m = 1048576; printf "tree %.1f MiB + untracked %.1f MiB + %s %.1f MiB = %.1f MiB (limit %d MiB)\n",
  t / m, u / m, d, c / m, (t + u + c) / m, l }'
if [ "$total" -gt $((LIMIT_MIB * 1048576)) ]; then
  echo "over the device tool's limit: the call would be refused" >&2
  exit 1
fi
cat <<EOF
ready. The device call (one run, ~3 min of machine time after its start):
  run  command: bash bench/device-run.sh   carry: ["$dest"]   timeout_s: 420
Its \$OUT brings back webgpu.json, webgpu-guardian.json and device.log; then give_back.
EOF
