import pytest

from libero_gym.tasks import TASKS, get_task


def test_ten_tasks_numbered_as_in_the_paper():
    assert sorted(TASKS) == list(range(1, 11))
    assert get_task(4).object_name == "bbq_sauce"
    assert get_task(1).object_name == "alphabet_soup"
    assert get_task(10).instruction == "pick up the orange juice and place it in the basket"
    for t in TASKS.values():
        assert t.libero_index == t.task_id - 1


def test_lookup_by_instruction_and_digit_string():
    assert get_task("  Pick up the BBQ sauce and place it in the basket ").task_id == 4
    assert get_task("7").task_id == 7


@pytest.mark.parametrize("bad", [0, 11, -1, "12", "pick up the basket", 3.5, None, True])
def test_unknown_task_names_the_value_and_the_accepted_ones(bad):
    with pytest.raises(ValueError) as e:
        get_task(bad)
    assert repr(bad) in str(e.value)
    assert "1-10" in str(e.value) or "Accepted instructions" in str(e.value)
