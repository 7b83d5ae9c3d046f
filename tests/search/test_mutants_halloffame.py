"""Hall of fame and Pareto front: ranking, ties, first-appearance dedup, state and CSV."""
import csv
import io

from lossforge.search.halloffame import Entry, HallOfFame, pareto_front


def _e(c, f, k, **kw):
    return Entry(expr=c, canonical=c, complexity=k, fitness=f, **kw)


def test_ties_rank_by_lower_complexity_then_canonical_and_size_is_kept():
    hof = HallOfFame(3)
    hof.update([_e("b", 0.5, 4), _e("a", 0.5, 4), _e("c", 0.5, 2), _e("d", 0.9, 9), _e("e", 0.1, 1)])
    assert [e.canonical for e in hof.entries] == ["d", "c", "a"]
    assert HallOfFame(1).size == 1


def test_a_canonical_form_keeps_its_first_result_across_and_within_updates():
    hof = HallOfFame(5)
    hof.update([_e("a", 0.2, 3), _e("a", 0.9, 3)])
    assert [(e.canonical, e.fitness) for e in hof.entries] == [("a", 0.2)]
    hof.update([_e("a", 0.8, 3), _e("b", 0.1, 2)])
    assert [(e.canonical, e.fitness) for e in hof.entries] == [("a", 0.2), ("b", 0.1)]
    assert [(e.canonical, e.fitness) for e in hof.front] == [("b", 0.1), ("a", 0.2)]


def test_the_front_covers_everything_seen_not_only_the_hall():
    hof = HallOfFame(1)
    hof.update([_e("big", 0.9, 9)])
    hof.update([_e("small", 0.3, 2)])
    assert [e.canonical for e in hof.entries] == ["big"]
    assert [e.canonical for e in hof.front] == ["small", "big"]
    hof.update([_e("small", 0.95, 2)])  # already seen: its first result stands
    assert [e.canonical for e in hof.front] == ["small", "big"]


def test_pareto_front_ties_and_strict_improvement():
    # same complexity: the fitter one; equal fitness: the larger canonical string
    assert [e.canonical for e in pareto_front([_e("a", 0.5, 3), _e("b", 0.5, 3)])] == ["b"]
    assert [e.canonical for e in pareto_front([_e("b", 0.5, 3), _e("a", 0.5, 3)])] == ["b"]
    assert [e.canonical for e in pareto_front([_e("a", 0.7, 3), _e("b", 0.5, 3)])] == ["a"]
    # more complex and only as fit: dominated
    assert [e.canonical for e in pareto_front([_e("a", 0.5, 3), _e("b", 0.5, 4)])] == ["a"]
    # negative fitness is still on the front
    assert [e.canonical for e in pareto_front([_e("a", -5.0, 3)])] == ["a"]
    assert pareto_front([]) == []


def test_state_round_trip():
    hof = HallOfFame(2)
    hof.update([_e("a", 0.2, 3, scores={"t": 0.5}, generation=4, origin="gp"), _e("b", 0.3, 5), _e("c", 0.1, 1)])
    again = HallOfFame(2)
    again.load_state(hof.state())
    assert again.entries == hof.entries and again.front == hof.front
    assert [e.canonical for e in again.front] == ["c", "a", "b"]
    empty = HallOfFame(2)
    empty.load_state({})
    assert empty.entries == [] and empty.front == []


def test_csv_rows_hold_every_field():
    hof = HallOfFame(3)
    conf = {"confirmed": True, "fitness": 0.25, "tasks": {"t1": {"mean": 0.5, "p_value": 0.012345}}}
    hof.update([_e("-y*log(p)", 0.3, 4, scores={"t1": 0.91, "t2": None}, generation=2, origin="gp",
                   confirmation=conf),
                _e("(p-y)**2", 0.1, 5, confirmation={"confirmed": False, "tasks": {}})])
    rows = list(csv.reader(io.StringIO(hof.to_csv(["t1", "t2"]))))
    assert rows[0] == ["rank", "expr", "complexity", "fitness", "t1", "t2", "generation", "origin", "canonical",
                       "confirmed", "confirmed_fitness", "confirmed_t1", "confirmed_t2", "p_t1", "p_t2"]
    assert rows[1] == ["1", "-y*log(p)", "4", "0.300000", "0.910000", "", "2", "gp", "-y*log(p)",
                       "yes", "0.250000", "0.500000", "", "0.01235", ""]
    assert rows[2] == ["2", "(p-y)**2", "5", "0.100000", "", "", "0", "", "(p-y)**2",
                       "no", "", "", "", "", ""]
    front = list(csv.reader(io.StringIO(hof.to_csv(["t1"], which="front"))))
    assert [r[1] for r in front[1:]] == ["-y*log(p)"]
    unconfirmed = HallOfFame(1)
    unconfirmed.update([_e("p", 0.0, 1)])
    assert list(csv.reader(io.StringIO(unconfirmed.to_csv([]))))[1][-2:] == ["", ""]


def test_entry_expression_parses_the_text():
    assert _e("-y*log(p)", 0.0, 4).expression.canonical == _e("-log(p)*y", 0.0, 4).expression.canonical


def test_csv_number_formats_for_small_p_values_and_nan():
    hof = HallOfFame(1)
    conf = {"confirmed": False, "fitness": float("nan"), "tasks": {"t": {"mean": 0.5, "p_value": 1.2345e-05}}}
    hof.update([_e("p", 0.1, 1, confirmation=conf)])
    row = list(csv.reader(io.StringIO(hof.to_csv(["t"]))))[1]
    assert row[-4:] == ["no", "nan", "0.500000", "1.234e-05"]


def test_pareto_front_keeps_the_first_of_identical_entries():
    first, second = _e("a", 0.5, 3, origin="first"), _e("a", 0.5, 3, origin="second")
    assert [e.origin for e in pareto_front([first, second])] == ["first"]
