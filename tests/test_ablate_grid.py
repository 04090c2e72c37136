"""research.ablate: grid parsing (the field's own type), variant names, the members/separate plan,
and the comparison's grouping, statistics and sorting (no training here)."""
import math

import numpy as np
import pytest

from configs import default
from research import ablate
from research.ablate import compare, plan


def _config():
  return default.get_config()


def test_values_parse_with_the_fields_own_type():
  config = _config()
  assert ablate.parse_axis(config, "optimizer.learning_rate=1e-4, 1e-3,3").values == (
      1e-4, 1e-3, 3.0)
  axis = ablate.parse_axis(config, "model.hidden_sizes=(64,64),(128,),32")
  assert axis.values == ((64, 64), (128,), (32,))
  assert axis.texts == ("(64,64)", "(128,)", "32")
  assert ablate.parse_axis(config, "model.batch_norm=true,False").values == (True, False)
  assert ablate.parse_axis(config, "train.batch_size=32,64").values == (32, 64)
  assert ablate.parse_axis(config, "model.init=xavier,he").values == ("xavier", "he")
  assert all(type(v) is float for v in ablate.parse_axis(config, "loss.l2=0,1").values)


@pytest.mark.parametrize("spec, message", [
    ("optimizer.learning_rate", "--grid='optimizer.learning_rate' must be "
     "<field>=<value>,<value>,... e.g. --grid='optimizer.learning_rate=1e-4,1e-3,1e-2'"),
    ("optimizer.learning_rat=1e-3", "unknown config field 'optimizer.learning_rat' in "
     "--grid='optimizer.learning_rat=1e-3'; config.optimizer has: beta1, beta2, "
     "bias_correction, decay_rate, eps, learning_rate, momentum_schedule, mu, name, schedule, "
     "weight_decay"),
    ("optimizer=adam", "--grid='optimizer=adam': config.optimizer is a group of fields, not a "
     "value; name one of its fields: beta1, beta2, bias_correction, decay_rate, eps, "
     "learning_rate, momentum_schedule, mu, name, schedule, weight_decay"),
    ("optimizer.learning_rate=1e-3,fast", "--grid='optimizer.learning_rate=1e-3,fast': 'fast' "
     "is not a number (config.optimizer.learning_rate is a number, now 0.001)"),
    ("train.batch_size=32,64.5", "--grid='train.batch_size=32,64.5': '64.5' is not an integer "
     "(config.train.batch_size is an integer, now 64)"),
    ("model.batch_norm=yes", "--grid='model.batch_norm=yes': 'yes' is not True or False "
     "(config.model.batch_norm is True or False, now False)"),
    ("optimizer.learning_rate=1e-3,", "--grid='optimizer.learning_rate=1e-3,' has an empty "
     "value; give values separated by commas, e.g. "
     "--grid='optimizer.learning_rate=1e-4,1e-3,1e-2'"),
    ("optimizer.learning_rate=1e-3,0.001", "--grid='optimizer.learning_rate=1e-3,0.001' gives "
     "the value 0.001 twice ('1e-3' and '0.001')"),
    ("=1,2", "--grid='=1,2' names no config field; e.g. "
     "--grid='optimizer.learning_rate=1e-4,1e-3,1e-2'"),
])
def test_a_bad_grid_is_one_line_naming_it(spec, message):
  with pytest.raises(ValueError) as error:
    ablate.parse_axis(_config(), spec)
  assert str(error.value) == message


def test_grid_level_mistakes():
  config = _config()
  with pytest.raises(ValueError, match=r"^config field 'loss.l2' is in two --grid flags; give "
                                       r"all its values in one, e.g. --grid='loss.l2=a,b,c'$"):
    ablate.parse_grid(config, ["loss.l2=0,1e-3", "loss.l2=1e-2"], 1)
  with pytest.raises(ValueError, match=r"^--seeds=0 must be an integer >= 1"):
    ablate.parse_grid(config, [], 0)
  with pytest.raises(ValueError, match=r"^--seeds=2 and --grid='seed=...' both set the seeds"):
    ablate.parse_grid(config, ["seed=3,4"], 2)
  assert [a.path for a in ablate.parse_grid(config, ["seed=3,4"], 1)] == ["seed"]


def test_the_product_is_named_after_its_overrides_in_flag_order():
  config = _config()
  config.seed = 5
  axes = ablate.parse_grid(config, ["optimizer.learning_rate=1e-4,1e-3",
                                    "model.hidden_sizes=(64,64),(128,)"], 2)
  variants = ablate.expand(config, axes)
  assert [v.name for v in variants] == [
      f"optimizer.learning_rate={lr},model.hidden_sizes={h},seed={s}"
      for lr in ("1e-4", "1e-3") for h in ("64x64", "128") for s in (5, 6)]
  last = variants[-1]
  assert last.overrides == (("optimizer.learning_rate", 1e-3), ("model.hidden_sizes", (128,)),
                            ("seed", 6))
  assert (last.config.optimizer.learning_rate, last.config.model.hidden_sizes,
          last.config.seed) == (1e-3, (128,), 6)
  assert config.optimizer.learning_rate == 1e-3 and config.seed == 5  # the base is untouched
  assert variants[0].config.optimizer.name == "adam"


def test_names_are_file_system_safe_unique_and_stable():
  config = _config()
  axes = ablate.parse_grid(config, ["data.name=a/b,a:b"], 1)
  with pytest.raises(ValueError, match=r"two variants get the same directory name "
                                       r"'data.name=a_b,seed=0'"):
    ablate.expand(config, axes)
  long = ablate.variant_name([(f"group.field_{i}", 1.0, "1e-3") for i in range(30)])
  assert len(long) == ablate.grid.MAX_NAME
  assert long == ablate.variant_name([(f"group.field_{i}", 1.0, "1e-3") for i in range(30)])
  assert long != ablate.variant_name([(f"group.field_{i}", 1.0, "1e-4") for i in range(30)])
  assert ablate.variant_name([("model.init", "he", "he"), ("seed", 1, "1")]) == \
      "model.init=he,seed=1"


def _variants(specs, seeds=1, **changes):
  config = _config()
  for path, value in changes.items():
    config.update_from_flattened_dict({path.replace("__", "."): value})
  return ablate.expand(config, ablate.parse_grid(config, specs, seeds))


def test_stackable_variants_form_one_program_the_rest_run_alone():
  variants = _variants(["optimizer.learning_rate=1e-3,1e-2", "model.init=xavier,he"], 2)
  (unit,) = ablate.plan_units(variants)
  assert unit.kind == plan.MEMBERS and len(unit.variants) == 8
  units = ablate.plan_units(_variants(["optimizer.learning_rate=1e-3,1e-2",
                                       "model.hidden_sizes=(16,),(32,)"], 2))
  assert [(u.kind, [v.name for v in u.variants]) for u in units] == [
      (plan.MEMBERS, [f"optimizer.learning_rate={lr},model.hidden_sizes={h},seed={s}"
                      for lr in ("1e-3", "1e-2") for s in (0, 1)]) for h in (16, 32)]
  assert {u.kind for u in ablate.plan_units(variants, vmap=False)} == {plan.SINGLE}
  chunks = ablate.plan_units(_variants(["loss.l2=0,1e-4,1e-3,1e-2"]), max_members=3)
  assert [(u.kind, len(u.variants)) for u in chunks] == [(plan.MEMBERS, 3), (plan.SINGLE, 1)]
  (alone,) = ablate.plan_units(_variants(["optimizer.name=sgd"]))
  assert alone.kind == plan.SINGLE and not alone.why
  with pytest.raises(ValueError, match=r"--max_members=-1 must be an integer >= 0"):
    ablate.plan_units(variants, max_members=-1)


def test_a_group_the_members_trainer_refuses_runs_as_separate_runs():
  units = ablate.plan_units(_variants(["loss.l2=0,1e-3"], optimizer__name="nesterov_lookahead"))
  assert [u.kind for u in units] == [plan.SINGLE, plan.SINGLE]
  assert "with optimizer 'nesterov_lookahead' the two differ" in units[0].why
  lines = ablate.describe(units)
  assert lines[0].startswith("[1/2] separate run: loss.l2=0,seed=0 (not stacked: loss.l2 differs")
  assert ablate.describe(ablate.plan_units(_variants(["loss.l2=0,1e-3"]))) == [
      "[1/1] 2 vmapped members of one program:", "    loss.l2=0,seed=0", "    loss.l2=1e-3,seed=0"]


def _run(name, lr, seed, best, test=None, loss=None, status="done", epochs=2):
  metrics = {"best_val_accuracy": best, "test_accuracy": test, "final_train_loss": loss,
             "epochs": float(epochs), "wall_time_s": 1.0}
  config = {"optimizer.learning_rate": lr, "seed": seed, "model.init": "he"}
  return compare.Run(f"/runs/{name}", status, config, metrics, 2, "ok: fine", {
      key: (np.arange(1.0, epochs + 1), np.full(epochs, best or 0.0)) for key in compare.CURVES},
      None)


def test_seeds_are_one_row_with_mean_and_sample_std_sorted_by_the_metric():
  runs = [_run("a0", 1e-3, 0, 0.90, 0.88, 0.30), _run("a1", 1e-3, 1, 0.94, 0.90, 0.20),
          _run("b0", 1e-2, 0, 0.95, 0.91, 0.10), _run("b1", 1e-2, 1, None, None, None,
                                                       status="diverged", epochs=0),
          _run("c0", 50.0, 0, None, None, None, status="diverged", epochs=0)]
  table = compare.compare(runs)
  assert table.differing == ["optimizer.learning_rate", "seed"] and table.grouped
  assert [row.fields for row in table.rows] == [{"optimizer.learning_rate": 1e-2},
                                                {"optimizer.learning_rate": 1e-3},
                                                {"optimizer.learning_rate": 50.0}]
  mean, std, n = table.rows[1].stats["best_val_accuracy"]
  assert (mean, n) == (pytest.approx(0.92), 2) and std == pytest.approx(math.sqrt(0.0008))
  assert table.rows[0].stats["best_val_accuracy"] == (0.95, None, 1)   # the diverged seed
  header, rows = compare.table_rows(table)
  assert header == ["optimizer.learning_rate", "runs", "best_val_accuracy", "test_accuracy",
                    "final_train_loss", "epochs", "wall_time_s", "status", "verdict"]
  assert rows[1][:6] == ["0.001", "2", "0.9200 ± 0.0283", "0.8900 ± 0.0141", "0.25 ± 0.071",
                         "2/2"]
  assert rows[0][7] == "1 done, 1 diverged" and rows[2][2:4] == ["-", "-"]
  by_loss = compare.compare(runs, sort="final_train_loss")
  assert [r.fields["optimizer.learning_rate"] for r in by_loss.rows] == [1e-2, 1e-3, 50.0]
  by_field = compare.compare(runs, sort="optimizer.learning_rate")
  assert [r.fields["optimizer.learning_rate"] for r in by_field.rows] == [1e-3, 1e-2, 50.0]
  with pytest.raises(ValueError, match=r"^--sort='val' is not a column; sort by one of "
                                       r"best_val_accuracy, test_accuracy, final_train_loss, "
                                       r"epochs, wall_time_s, optimizer.learning_rate, seed$"):
    compare.compare(runs, sort="val")


def test_without_repeated_seeds_each_run_is_a_row_with_its_seed():
  table = compare.compare([_run("a", 1e-3, 0, 0.9), _run("b", 1e-2, 1, 0.8)])
  assert not table.grouped
  assert [r.fields for r in table.rows] == [{"optimizer.learning_rate": 1e-3, "seed": 0},
                                            {"optimizer.learning_rate": 1e-2, "seed": 1}]
  text = compare.format_table(table)
  assert text.splitlines()[0].split() == ["optimizer.learning_rate", "seed", "best_val_accuracy",
                                          "test_accuracy", "final_train_loss", "epochs",
                                          "wall_time_s", "status", "verdict"]
