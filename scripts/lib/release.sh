# shellcheck shell=bash
# The one release build shared by the benches (scripts/bench-check), the chaos run
# (scripts/chaos) and the performance runs (scripts/perf, scripts/fleet-perf).
#
# Cargo unifies features over the packages named in one invocation, and these packages do not
# ask the same features of their common dependencies (serde_core, zerocopy, regex-automata...).
# Built apart, `-p authorizer -p chaos` and `-p benches` therefore compile two different sets of
# release artifacts: every script naming the same packages builds, and finds, the same ones.
# The bench profile inherits release unchanged, so `cargo bench` reuses these artifacts too.
RELEASE_PACKAGES=(-p authorizer -p chaos -p loadgen -p benches)
RELEASE_TARGETS=(--bin authorizer --bin chaos --bin loadgen --bin webhook-receiver --bench '*')

# release_build [ARGS...]: the shared build (target/release), extra cargo arguments appended.
release_build() {
    cargo build --release --locked "${RELEASE_PACKAGES[@]}" "${RELEASE_TARGETS[@]}" "$@"
}
