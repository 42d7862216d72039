"""Run one benchmark: ``python -m bench NAME [options]``; NAME is a key of ``BENCHMARKS``
(see BENCHMARKS.md)."""

from __future__ import annotations

import sys

from bench import demo, features, graph, honest_eval, nightly, peer_graph, quality, stages, training

BENCHMARKS = {
    "features": features.main,
    "graph": graph.main,
    "training": training.main,
    "demo": demo.main,
    "honest_eval": honest_eval.main,
    "quality": quality.main,
    "stages": stages.main,
    "nightly": nightly.main,
    "peer_graph": peer_graph.main,
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        print(f"usage: python -m bench {{{','.join(BENCHMARKS)}}} [options]")
        return 2
    return BENCHMARKS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
