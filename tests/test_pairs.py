"""Label-derived pair structure against brute force."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from tripletkit.pairs import LabelGroups, negative_counts, pair_masks, positive_table

label_lists = st.lists(st.integers(-3, 5), min_size=0, max_size=25)


@given(labels=label_lists, ref_labels=label_lists, use_self=st.booleans(), data=st.data())
def test_table_masks_and_counts_agree_with_brute_force(labels, ref_labels, use_self, data):
    anchors = torch.tensor(labels, dtype=torch.long)
    refs = torch.tensor(ref_labels, dtype=torch.long)
    self_index = None
    if use_self:
        choices = st.integers(-1, len(ref_labels) - 1) if ref_labels else st.just(-1)
        self_index = torch.tensor(
            data.draw(st.lists(choices, min_size=len(labels), max_size=len(labels))),
            dtype=torch.long,
        )
    expected_pos = [
        [
            j
            for j in range(len(ref_labels))
            if ref_labels[j] == labels[i] and (self_index is None or j != int(self_index[i]))
        ]
        for i in range(len(labels))
    ]
    expected_neg = [sum(r != a for r in ref_labels) for a in labels]

    table = positive_table(anchors, refs, self_index)
    for i in range(len(labels)):
        row = table.index[i, : int(table.count[i])].tolist()
        assert row == expected_pos[i]
        assert (table.index[i, int(table.count[i]) :] == -1).all()
    assert negative_counts(anchors, refs).tolist() == expected_neg
    groups = LabelGroups(refs)
    assert groups.positive_counts(anchors, self_index).tolist() == [len(p) for p in expected_pos]

    pos_mask, neg_mask = pair_masks(anchors, refs, self_index)
    for i in range(len(labels)):
        assert torch.nonzero(pos_mask[i]).flatten().tolist() == expected_pos[i]
        assert int(neg_mask[i].sum()) == expected_neg[i]
