"""research.ensemble: stacked/vmapped evaluation, probability averaging, member sources."""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.ensemble import combine, members as members_lib
from research.ensemble.members import Member


class _Mlp(nn.Module):
  width: int = 8
  num_classes: int = 3

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = nn.relu(nn.Dense(self.width)(x))
    h = nn.Dropout(0.5, deterministic=not train)(h)
    return nn.Dense(self.num_classes)(h)


def _members(k, width=8, seed=0):
  model = _Mlp(width)
  x = jnp.zeros((1, 4), jnp.float32)
  return [Member(f"m{i}", model, model.init(jax.random.PRNGKey(seed + i), x))
          for i in range(k)]


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  return rng.normal(size=(37, 4)).astype(np.float32), rng.integers(0, 3, size=37)


def test_vmapped_logits_equal_per_member_logits(data):
  x, _ = data
  ms = _members(3)
  vmapped = members_lib.member_logits(ms, x, batch_size=16)
  looped = members_lib.member_logits(ms, x, batch_size=16, mode="loop")
  mapped = members_lib.member_logits(ms, x, batch_size=16, mode="map")
  assert vmapped.shape == mapped.shape == looped.shape == (3, 37, 3)
  for i, m in enumerate(ms):
    direct = np.asarray(m.model.apply(m.variables, x))
    np.testing.assert_allclose(vmapped[i], direct, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(looped[i], direct, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mapped[i], direct, rtol=1e-5, atol=1e-6)


def test_mixed_architectures_fall_back_to_groups_in_member_order(data):
  x, _ = data
  a, b = _members(2, width=8), _members(2, width=5, seed=10)
  ms = [a[0], b[0], a[1], b[1]]
  assert members_lib.group_by_architecture(ms) == [[0, 2], [1, 3]]
  logits = members_lib.member_logits(ms, x)
  for i, m in enumerate(ms):
    np.testing.assert_allclose(logits[i], m.model.apply(m.variables, x), rtol=1e-5, atol=1e-6)


def test_ensemble_of_identical_models_equals_the_single_model(data):
  x, y = data
  single = _members(1)[0]
  ensemble = [single._replace(name=f"copy{i}") for i in range(4)]
  logits = members_lib.member_logits(ensemble, x)
  single_probs = members_lib.softmax(np.asarray(single.model.apply(single.variables, x)))
  np.testing.assert_allclose(combine.ensemble_probabilities(logits), single_probs, rtol=1e-5,
                             atol=1e-7)
  curve = combine.cumulative_metrics(logits, y)
  assert [row["k"] for row in curve] == [1, 2, 3, 4]
  assert len({row["accuracy"] for row in curve}) == 1
  assert curve[0]["accuracy"] == combine.accuracy(single_probs, y)


def test_ensemble_averages_probabilities_not_logits():
  logits = np.array([[[4.0, 0.0]], [[-1.0, 0.0]]])  # two members, one example, two classes
  expected = (members_lib.softmax(logits[0]) + members_lib.softmax(logits[1])) / 2
  np.testing.assert_allclose(combine.ensemble_probabilities(logits), expected)
  # Averaging logits would give softmax([1.5, 0]) instead.
  assert not np.allclose(combine.ensemble_probabilities(logits),
                         members_lib.softmax(logits.mean(0)))
  w = combine.ensemble_probabilities(logits, weights=[1.0, 0.0])
  np.testing.assert_allclose(w, members_lib.softmax(logits[0]))
  with pytest.raises(ValueError, match="weights=.*2 non-negative"):
    combine.ensemble_probabilities(logits, weights=[1.0, -1.0])


def test_cumulative_metrics_match_direct_ensembles(data):
  x, y = data
  logits = members_lib.member_logits(_members(4), x)
  curve = combine.cumulative_metrics(logits, y)
  for k in range(1, 5):
    p = combine.ensemble_probabilities(logits[:k])
    assert curve[k - 1]["accuracy"] == combine.accuracy(p, y)
    np.testing.assert_allclose(curve[k - 1]["nll"], combine.nll(p, y))


def test_stack_unstack_roundtrip():
  ms = _members(3)
  stacked = members_lib.stack_variables([m.variables for m in ms])
  assert jax.tree.leaves(stacked)[0].shape[0] == 3
  for m, v in zip(ms, members_lib.unstack_variables(stacked)):
    chex.assert_trees_all_equal(m.variables, v)


def test_errors_name_the_bad_value(data):
  x, _ = data
  with pytest.raises(ValueError, match="members is empty"):
    members_lib.member_logits([], x)
  with pytest.raises(ValueError, match="mode='pmap' is unknown; known: vmap, map, loop"):
    members_lib.member_logits(_members(1), x, mode="pmap")
  with pytest.raises(ValueError, match="temperature=0"):
    members_lib.softmax(np.zeros((2, 2)), temperature=0)
  with pytest.raises(ValueError, match=r"shape \(K, N, C\)"):
    combine.ensemble_probabilities(np.zeros((2, 2)))


def test_checkpoint_ensemble_loads_exactly_the_requested_steps(tmp_path, data):
  from research.ensemble import snapshots
  x, _ = data
  model = _Mlp()
  base = model.init(jax.random.PRNGKey(0), x[:1])
  writer = snapshots.SnapshotWriter(str(tmp_path / "snaps"))
  for epoch in range(1, 6):  # the value of every leaf encodes the epoch
    writer.save(epoch, jax.tree.map(lambda v, e=epoch: jnp.full_like(v, e), base),
                {"epoch": epoch, "val_accuracy": epoch / 10})
  writer.close()
  assert snapshots.list_snapshots(str(tmp_path / "snaps")) == [1, 2, 3, 4, 5]
  ms = snapshots.members_from_snapshots(str(tmp_path / "snaps"), model, steps=[4, 2])
  assert [m.info["epoch"] for m in ms] == [4, 2]
  for m, epoch in zip(ms, [4, 2]):
    chex.assert_trees_all_equal(m.variables, jax.tree.map(lambda v, e=epoch: np.full_like(v, e),
                                                          base))
  with pytest.raises(ValueError, match=r"step=7 is not in .*saved steps: \[1, 2, 3, 4, 5\]"):
    snapshots.members_from_snapshots(str(tmp_path / "snaps"), model, steps=[7])


def test_stacked_snapshot_unstacks_into_members(tmp_path, data):
  from research.ensemble import snapshots
  x, _ = data
  ms = _members(3)
  writer = snapshots.SnapshotWriter(str(tmp_path / "s"))
  writer.save(1, members_lib.stack_variables([m.variables for m in ms]), {"stacked": True})
  writer.close()
  loaded = snapshots.members_from_snapshots(str(tmp_path / "s"), ms[0].model)
  assert [m.info["member"] for m in loaded] == [0, 1, 2]
  for m, restored in zip(ms, loaded):
    chex.assert_trees_all_equal(m.variables, restored.variables)
  one = snapshots.members_from_snapshots(str(tmp_path / "s"), ms[0].model, member_index=2)
  chex.assert_trees_all_equal(one[0].variables, ms[2].variables)


def _fake_run(path, val_accs):
  import json
  import os
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "metrics.jsonl"), "w") as f:
    f.write(json.dumps({"epoch": 0.5, "train_loss": 1.0}) + "\n")  # a row without val_accuracy
    for epoch, acc in enumerate(val_accs, start=1):
      f.write(json.dumps({"epoch": epoch, "val_accuracy": acc}) + "\n")


def test_rank_workdirs_by_best_validation_accuracy(tmp_path):
  from research.ensemble import workdirs
  _fake_run(tmp_path / "search" / "trial_0", [0.5, 0.7, 0.6])
  _fake_run(tmp_path / "search" / "trial_1", [0.9, 0.8])
  _fake_run(tmp_path / "search" / "nested" / "trial_2", [0.75])
  (tmp_path / "search" / "not_a_run").mkdir()
  ranked = workdirs.rank_workdirs(str(tmp_path / "search"))
  assert [r.workdir.split("/")[-1] for r in ranked] == ["trial_1", "trial_2", "trial_0"]
  assert [(r.best_val_accuracy, r.best_epoch) for r in ranked] == [(0.9, 1), (0.75, 1), (0.7, 2)]
  # Explicit paths and globs give the same runs.
  assert len(workdirs.find_run_workdirs(str(tmp_path / "search" / "trial_*"))) == 2
  with pytest.raises(ValueError, match="no run workdir"):
    workdirs.rank_workdirs(str(tmp_path / "search" / "not_a_run"))
  _fake_run(tmp_path / "empty", [])
  with pytest.raises(ValueError, match="has no 'val_accuracy' row"):
    workdirs.best_val_accuracy(str(tmp_path / "empty"))
