"""Our AND-OR optimiser, learned baselines and shared (multi-model) interactions against transcriptions of the
lab's own loops, in torch float64.

Transcribed from sjtu-xai-lab (the lines are copied as closely as torch allows; float64 instead of the
lab's float32, tqdm, checkpoints and logging dropped):
- interaction-concept @ e92e776, src/harsanyi/and_or_harsanyi_utils.py: get_reward2Iand_mat,
  get_reward2Ior_mat, _train_p_q (ICML'23 AND-OR extraction);
- aog @ bd17fb9, src/harsanyi/and_harsanyi_utils.py: _train_baseline (CVPR'23 baseline learning);
- generalizable-interaction @ ba82573, harsanyi/and_or_harsanyi_utils.py: _train_p_q_joint_model
  (Chen et al. ICLR'24, interactions shared by several models).
The lab orders subsets by np.binary_repr (player 0 is the most significant bit); ours by bit i <-> player i,
so the tests map between the two orders with a bit reversal.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import interact as it

torch = pytest.importorskip("torch")


# ---- interaction_utils.py / and_or_harsanyi_utils.py (interaction-concept @ e92e776) ----
def generate_all_masks(length):
    masks = list(range(2**length))
    masks = [np.binary_repr(mask, width=length) for mask in masks]
    return [[bool(int(item)) for item in mask] for mask in masks]


def generate_subset_masks(set_mask, all_masks):
    set_mask_ = set_mask.expand_as(all_masks)
    is_subset = torch.all(torch.logical_or(set_mask_, torch.logical_not(all_masks)), dim=1)
    return all_masks[is_subset], is_subset


def generate_reverse_subset_masks(set_mask, all_masks):
    set_mask_ = set_mask.expand_as(all_masks)
    is_rev_subset = torch.all(torch.logical_or(set_mask_, all_masks), dim=1)
    return all_masks[is_rev_subset], is_rev_subset


def get_reward2Iand_mat(dim):
    all_masks = torch.BoolTensor(generate_all_masks(dim))
    n_masks, _ = all_masks.shape
    mat = []
    for i in range(n_masks):
        mask_S = all_masks[i]
        row = torch.zeros(n_masks, dtype=torch.float64)
        mask_Ls, L_indices = generate_subset_masks(mask_S, all_masks)
        L_indices = (L_indices == True).nonzero(as_tuple=False)  # noqa: E712
        row[L_indices] = torch.pow(-1.0, mask_S.sum() - mask_Ls.sum(dim=1)).unsqueeze(1).double()
        mat.append(row.clone())
    return torch.stack(mat)


def get_reward2Ior_mat(dim):
    all_masks = torch.BoolTensor(generate_all_masks(dim))
    n_masks, _ = all_masks.shape
    mat = []
    for i in range(n_masks):
        mask_S = all_masks[i]
        row = torch.zeros(n_masks, dtype=torch.float64)
        if mask_S.sum() == 0:
            row[i] = 1.0
        else:
            mask_NLs, NL_indices = generate_reverse_subset_masks(mask_S, all_masks)
            NL_indices = (NL_indices == True).nonzero(as_tuple=False)  # noqa: E712
            row[NL_indices] = -torch.pow(-1.0, mask_S.sum() + mask_NLs.sum(dim=1) + dim).unsqueeze(1).double()
        mat.append(row.clone())
    return torch.stack(mat)


def _train_p_q(rewards, lr, niter, qbound, reward2Iand, reward2Ior):
    log_lr = np.log10(lr)
    eta_list = np.logspace(log_lr, log_lr - 1, niter)
    p = torch.zeros_like(rewards).requires_grad_(True)
    q = torch.zeros_like(rewards).requires_grad_(True)
    optimizer = torch.optim.SGD([p, q], lr=0.0, momentum=0.9)
    losses = []
    for it_ in range(niter):
        q.data = torch.max(torch.min(q.data, qbound), -qbound)
        Iand_p = torch.matmul(reward2Iand, 0.5 * (rewards + q) + p)
        Ior_p = torch.matmul(reward2Ior, 0.5 * (rewards + q) - p)
        loss = torch.sum(torch.abs(Iand_p)) + torch.sum(torch.abs(Ior_p))
        losses.append(loss.item())
        if it_ + 1 < niter:
            optimizer.zero_grad()
            optimizer.param_groups[0]["lr"] = eta_list[it_]
            loss.backward()
            optimizer.step()
    return p.detach(), q.detach(), losses


# ---- and_harsanyi_utils.py (aog @ bd17fb9), the l1 branch ----
def _train_baseline(f_baseline2rewards, f_masksbaseline2rewards, baseline_init, baseline_lr, niter,
                    baseline_min, baseline_max, reward2Iand):  # fmt: skip
    with torch.no_grad():
        masks, rewards = f_baseline2rewards(baseline_init)
        Iand = reward2Iand @ rewards
    eta_baseline_list = np.logspace(np.log10(baseline_lr), np.log10(baseline_lr) - 1, niter)
    baseline = baseline_init.clone().requires_grad_(True)
    losses = []
    for it_ in range(niter):
        with torch.no_grad():
            reward_coefs = torch.matmul(torch.sign(Iand), reward2Iand)
        _, rewards = f_masksbaseline2rewards(masks, baseline)  # calc_bs = all masks: one batch
        loss_baseline = torch.matmul(reward_coefs, rewards)
        baseline_grad = torch.autograd.grad(loss_baseline, baseline, only_inputs=True)[0]
        baseline.data = baseline.data - eta_baseline_list[it_] * baseline_grad
        baseline = torch.max(torch.min(baseline.data, baseline_max), baseline_min).clone().detach()
        baseline.requires_grad_(True)  # the lab then casts .float(); we stay in float64
        with torch.no_grad():
            masks, rewards = f_baseline2rewards(baseline)
            Iand = reward2Iand @ rewards
        losses.append(loss_baseline.item())
    return baseline.detach(), losses


# ---- and_or_harsanyi_utils.py (generalizable-interaction @ ba82573), two models ----
def _train_p_q_joint_model(rewards, lr, niter, alpha, qbound, pbound, reward2Iand, reward2Ior):
    rewards_1, rewards_2 = rewards
    qbound_1, qbound_2 = qbound
    pbound_1, pbound_2 = pbound
    p_share = torch.zeros_like(rewards_1).requires_grad_(True)
    p_1 = torch.zeros_like(rewards_1).requires_grad_(True)
    p_2 = torch.zeros_like(rewards_1).requires_grad_(True)
    q_1 = torch.zeros_like(rewards_1).requires_grad_(True)
    q_2 = torch.zeros_like(rewards_1).requires_grad_(True)
    optimizer = torch.optim.SGD([p_share, p_1, p_2, q_1, q_2], lr=lr, momentum=0.9)
    for it_ in range(niter):
        q_1.data = torch.max(torch.min(q_1.data, qbound_1), -qbound_1)
        q_2.data = torch.max(torch.min(q_2.data, qbound_2), -qbound_2)
        p_1.data = torch.max(torch.min(p_1.data, pbound_1), -pbound_1)
        p_2.data = torch.max(torch.min(p_2.data, pbound_2), -pbound_2)
        Iand_p_1 = torch.matmul(reward2Iand, 0.5 * (rewards_1 + q_1) + p_share + p_1).squeeze()
        Ior_p_1 = torch.matmul(reward2Ior, 0.5 * (rewards_1 + q_1) - p_share - p_1).squeeze()
        Iand_p_2 = torch.matmul(reward2Iand, 0.5 * (rewards_2 + q_2) + p_share + p_2).squeeze()
        Ior_p_2 = torch.matmul(reward2Ior, 0.5 * (rewards_2 + q_2) - p_share - p_2).squeeze()
        I_1 = torch.cat((Iand_p_1.unsqueeze(dim=0), Ior_p_1.unsqueeze(dim=0)), dim=1)
        I_2 = torch.cat((Iand_p_2.unsqueeze(dim=0), Ior_p_2.unsqueeze(dim=0)), dim=1)
        and_or_matrix = torch.cat((I_1, I_2), dim=0)
        max_abs, _ = torch.max(torch.abs(and_or_matrix), dim=0)
        v = (1 - alpha) * max_abs + alpha * torch.sum(torch.abs(and_or_matrix), dim=0)
        loss = torch.sum(v)
        if it_ + 1 < niter:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return p_share.detach(), p_1.detach(), p_2.detach(), q_1.detach(), q_2.detach()


# ---- helpers ----
def lab_order(n):
    """perm[j] = our subset index of the lab's subset j (bit reversal over n bits)."""
    return np.array([int(np.binary_repr(j, width=n)[::-1], 2) for j in range(2**n)])


@pytest.mark.parametrize("n,niter", [(2, 15), (3, 40), (3, 1), (3, 2)])
def test_extract_and_or_matches_the_labs_loop(n, niter):
    """Same p, q, I_and, I_or and final loss as `_train_p_q` for the same niter (niter - 1 updates)."""
    v = np.random.default_rng(n + niter).normal(size=(2, 2**n))
    perm = lab_order(n)
    a_mat, o_mat = get_reward2Iand_mat(n), get_reward2Ior_mat(n)
    with jax.enable_x64(True):
        res = it.extract_and_or(v, q_bound=0.04, steps=niter, lr=1e-2, merge_singletons=False)
        for b in range(2):
            rewards = torch.tensor(v[b][perm])  # the lab's order
            qbound = 0.04 * torch.abs(rewards[-1] - rewards[0])  # qstd "vN-v0"
            p, q, losses = _train_p_q(rewards, 1e-2, niter, qbound, a_mat, o_mat)
            i_and = (a_mat @ (0.5 * (rewards + q) + p)).numpy()
            i_or = (o_mat @ (0.5 * (rewards + q) - p)).numpy()
            np.testing.assert_allclose(np.asarray(res.p[b])[perm], p.numpy(), atol=1e-10)
            np.testing.assert_allclose(np.asarray(res.q[b])[perm], q.numpy(), atol=1e-10)
            np.testing.assert_allclose(np.asarray(res.i_and[b])[perm], i_and, atol=1e-10)
            np.testing.assert_allclose(np.asarray(res.i_or[b])[perm], i_or, atol=1e-10)
            assert float(res.loss[b]) == pytest.approx(losses[-1], abs=1e-10)


def test_learn_baseline_matches_the_labs_loop():
    """The default (empty set in the loss, plain gradient descent, logspace decay, clamp) equals the lab's
    `_train_baseline` on a smooth model of 3 players with 2 positions each."""
    rng = np.random.default_rng(10)
    w = rng.normal(size=(6, 3))
    x = rng.normal(size=6)
    b0 = 0.1 * rng.normal(size=6)
    players = [[0, 1], [2, 3], [4, 5]]
    steps, lr, bound = 12, 3e-2, 0.02
    n = 3
    all_masks = torch.BoolTensor(generate_all_masks(n))  # [8, 3], the lab's order
    member = torch.tensor(it.player_matrix(players, (6,)))  # [3, 6]
    w_t, x_t = torch.tensor(w), torch.tensor(x)

    def rewards_of(masks, baseline):
        keep = (masks.double() @ member.double()) > 0  # [m, 6]
        xs = torch.where(keep, x_t, baseline)
        return masks, torch.tanh(xs @ w_t).prod(-1)

    ref, ref_losses = _train_baseline(
        lambda b: rewards_of(all_masks, b), rewards_of, torch.tensor(b0), lr, steps,
        torch.tensor(b0 - bound), torch.tensor(b0 + bound), get_reward2Iand_mat(n),
    )  # fmt: skip
    with jax.enable_x64(True):
        b, losses = it.learn_baseline(
            lambda xs, w: jnp.tanh(xs @ w).prod(),
            x,
            b0,
            players,
            steps=steps,
            lr=lr,
            bound=bound,
            fn_args=(w,),
        )
        np.testing.assert_allclose(losses, ref_losses, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(b, ref.numpy(), atol=1e-12)
        assert np.abs(np.asarray(b) - b0).max() == pytest.approx(bound)  # the clamp is active in this run
        # The variant: without the empty set and with momentum it is a different run.
        b2, _ = it.learn_baseline(
            lambda xs, w: jnp.tanh(xs @ w).prod(), x, b0, players, steps=steps, lr=lr, bound=bound,
            fn_args=(w,), include_empty=False, momentum=0.9,
        )  # fmt: skip
        assert np.abs(np.asarray(b2) - np.asarray(b)).max() > 1e-6


@pytest.mark.parametrize("niter", [1, 30])
def test_shared_interactions_match_the_labs_joint_loop(niter):
    """`extract_shared_and_or` on two models equals `_train_p_q_joint_model` (constant lr, momentum 0.9,
    |p_i| and |q_i| clamped every iteration, niter - 1 updates)."""
    n = 3
    rng = np.random.default_rng(5)
    base = rng.normal(size=2**n)
    v = np.stack([base + 0.3 * rng.normal(size=2**n), base + 0.3 * rng.normal(size=2**n)])  # [2 models, 2^n]
    perm = lab_order(n)
    a_mat, o_mat = get_reward2Iand_mat(n), get_reward2Ior_mat(n)
    q_frac, p_abs, lr, alpha = 0.04, np.array([0.05, 0.08]), 1e-2, 0.1
    rewards = [torch.tensor(v[m][perm]) for m in range(2)]
    qb = [q_frac * torch.abs(r[-1] - r[0]) for r in rewards]
    pb = [torch.tensor(p_abs[m]) for m in range(2)]
    p_share, p_1, p_2, q_1, q_2 = _train_p_q_joint_model(rewards, lr, niter, alpha, qb, pb, a_mat, o_mat)
    with jax.enable_x64(True):
        res = it.extract_shared_and_or(
            v, q_bound=q_frac, p_bound=p_abs, steps=niter, lr=lr, alpha=alpha, merge_singletons=False
        )
        np.testing.assert_allclose(np.asarray(res.p_share)[perm], p_share.numpy(), atol=1e-10)
        for m, (p_m, q_m) in enumerate(((p_1, q_1), (p_2, q_2))):
            np.testing.assert_allclose(np.asarray(res.p[m])[perm], p_m.numpy(), atol=1e-10)
            np.testing.assert_allclose(np.asarray(res.q[m])[perm], q_m.numpy(), atol=1e-10)
            i_and = (a_mat @ (0.5 * (rewards[m] + q_m) + p_share + p_m)).numpy()
            i_or = (o_mat @ (0.5 * (rewards[m] + q_m) - p_share - p_m)).numpy()
            np.testing.assert_allclose(np.asarray(res.i_and[m])[perm], i_and, atol=1e-10)
            np.testing.assert_allclose(np.asarray(res.i_or[m])[perm], i_or, atol=1e-10)
