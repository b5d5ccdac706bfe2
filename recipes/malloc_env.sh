# Sourced by the long CPU jobs of recipes/ (v2's pretrain_v2.sh and model_card_eval.sh, the v3
# ablation): glibc malloc without mmap and never trimmed. The encoder's large activations (>32 MB,
# always mmap'ed by default) are otherwise unmapped and faulted in again every step. Measured
# 2026-12-01 on the same 30 steps of the v2 run (resume from step 4008, 2 threads, nothing else
# running; identical losses): wall 242 s -> 186 s, system time 95 s -> 5 s, minor faults 29 M -> 0.8 M
# (jemalloc as configured by default: 322 s; with decay off: 183 s, but it is an extra system
# library). Values already set in the environment win.
export MALLOC_MMAP_MAX_="${MALLOC_MMAP_MAX_:-0}" MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-68719476736}"
export MALLOC_TOP_PAD_="${MALLOC_TOP_PAD_:-1073741824}"
