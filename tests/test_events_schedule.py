"""Early stopping on a dev plateau and the interpretability flags of a selection (issue 29), by hand."""
import pytest

from epi_utils.events.schedule import Plateau, epoch_scale, selection_problems


def test_plateau_stops_after_patience_checks_without_improvement_and_keeps_the_best():
    p = Plateau(patience=2)
    stops = [p.update(s) for s in (0.10, 0.30, 0.25, 0.30, 0.20)]
    # best 0.30 at check 2; checks 3 and 4 do not beat it (0.30 is no improvement) -> stop at check 4
    assert stops == [False, False, False, True, True]
    assert (p.best, p.best_check, p.checks) == (0.30, 2, 5) and not p.still_improving


def test_min_delta_and_the_maximum():
    p = Plateau(patience=3, max_checks=4, min_delta=0.05)
    assert [p.update(s) for s in (0.10, 0.12, 0.14, 0.30)] == [False, False, False, True]
    # 0.12 and 0.14 are within min_delta of 0.10; 0.30 improves at the last allowed check
    assert p.best_check == 4 and p.at_maximum and p.still_improving and not p.plateaued


@pytest.mark.parametrize("kwargs", [dict(patience=0), dict(patience=1, max_checks=0), dict(patience=1, min_delta=-0.1)])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        Plateau(**kwargs)
    with pytest.raises(ValueError, match="finite"):
        Plateau(patience=1).update(float("nan"))


def test_selection_problems_name_the_last_epoch_and_a_near_zero_dev_f1():
    assert selection_problems(best_epoch=3, last_epoch=5, max_epochs=5, dev_f1=0.4) == []
    assert selection_problems(best_epoch=5, last_epoch=5, max_epochs=5, dev_f1=0.4) == [
        "kept the last epoch (5 of at most 5): still improving"]
    assert selection_problems(best_epoch=4, last_epoch=5, max_epochs=20, dev_f1=0.02) == ["dev F1 0.020 < 0.05: barely learned"]
    assert selection_problems(best_epoch=3, last_epoch=5, max_epochs=20, dev_f1=0.3) == []   # stopped by the plateau


def test_a_tuple_key_improves_lexicographically_like_the_decoder_selection_key():
    p = Plateau(patience=2)
    # (dev F1, dev F1 from annotated mentions, -dev loss): ties on F1 are broken by the rest of the key
    stops = [p.update(k) for k in ((0.0, 0.1, -3.0), (0.0, 0.1, -2.0), (0.0, 0.1, -2.5), (0.0, 0.05, -1.0))]
    assert stops == [False, False, False, True] and p.best == (0.0, 0.1, -2.0) and p.best_check == 2
    with pytest.raises(ValueError, match="finite"):
        Plateau(patience=1).update((0.1, float("inf")))


def test_epoch_scale_counts_small_data_sets_in_groups_of_passes():
    # ChFinAnn's 997 training documents: 125 batches of 8 (one pass is a scheduled epoch), 32 of 32
    assert epoch_scale(n_items=997, batch=8, epoch_steps=125) == 1
    assert epoch_scale(n_items=997, batch=32, epoch_steps=32) == 1
    # 210 documents: ceil(210 / 8) = 27 batches; ceil(125 / 27) = 5 passes per scheduled epoch
    assert epoch_scale(n_items=210, batch=8, epoch_steps=125) == 5
    # ceil(210 / 32) = 7 batches; ceil(32 / 7) = 5
    assert epoch_scale(n_items=210, batch=32, epoch_steps=32) == 5
    # 714 documents (a held-out data set's size): ceil(714 / 8) = 90; ceil(125 / 90) = 2
    assert epoch_scale(n_items=714, batch=8, epoch_steps=125) == 2
    assert epoch_scale(n_items=5, batch=8, epoch_steps=0) == 1       # scaling off
    with pytest.raises(ValueError, match="batch"):
        epoch_scale(n_items=10, batch=0, epoch_steps=10)
