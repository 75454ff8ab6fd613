"""Memory-bounded evaluation at scale (slow, opt-in: ``pytest -m slow``)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

_CHILD = textwrap.dedent(
    """
    import json, resource
    import numpy as np, torch
    from tripletkit.evaluation import evaluate_retrieval

    generator = torch.Generator().manual_seed(0)
    n_refs, n_queries, dim, classes = 1_000_000, 10_000, 128, 1_000
    centres = torch.randn(classes, dim, generator=generator)
    ref_labels = torch.randint(0, classes, (n_refs,), generator=generator)
    refs = torch.empty(n_refs, dim)
    for start in range(0, n_refs, 100_000):
        stop = start + 100_000
        noise = torch.randn(stop - start, dim, generator=generator)
        refs[start:stop] = centres[ref_labels[start:stop]] + 2.0 * noise
    query_labels = torch.randint(0, classes, (n_queries,), generator=generator)
    queries = centres[query_labels] + 2.0 * torch.randn(n_queries, dim, generator=generator)
    result = evaluate_retrieval(queries, query_labels, refs, ref_labels, k=[1, 10])
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # Brute force for the first queries: dense float64 distances, ranked by (distance, index).
    # (The search runs in float32: references within rounding of each other may swap ranks.)
    checked = {}
    q64, r64 = queries[:20].double(), refs.double()
    qn = torch.nn.functional.normalize(q64, dim=1)
    rn = torch.nn.functional.normalize(r64, dim=1)
    for i in range(20):
        d = (1.0 - rn @ qn[i]).numpy()
        order = np.lexsort((np.arange(n_refs), d))
        rel = (ref_labels.numpy()[order] == int(query_labels[i]))
        r = int(rel.sum())
        hits = np.cumsum(rel[:r])
        map_at_r = float((rel[:r] * hits / np.arange(1, r + 1)).sum() / r)
        checked[i] = (float(rel[0]), float(rel[:r].mean()), map_at_r)
    print(json.dumps({
        "peak_mb": peak_mb,
        "metrics": result.metrics,
        "per_query": {
            name: result.per_query[name][:20].tolist()
            for name in ("precision_at_1", "r_precision", "map_at_r")
        },
        "checked": checked,
    }))
    """
)


@pytest.mark.slow
def test_one_million_references_evaluate_in_under_8_gb():
    done = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=3_000, check=True
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"peak RSS {out['peak_mb']:.0f} MiB; metrics {out['metrics']}")
    assert out["peak_mb"] < 8 * 1024
    for i, (p1, r_precision, map_at_r) in out["checked"].items():
        i = int(i)
        assert out["per_query"]["precision_at_1"][i] == p1
        assert out["per_query"]["r_precision"][i] == pytest.approx(r_precision, abs=2e-3)
        assert out["per_query"]["map_at_r"][i] == pytest.approx(map_at_r, abs=2e-3)
