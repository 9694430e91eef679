#!/usr/bin/env python3
"""DrumVAE's own PyTorch implementation of its model and training step, for throughput comparison.

`benches/model_speed.rs` (`cargo bench --bench model_speed -- train`) runs this script as a
subprocess for every (preset, batch) row of its training table, right after measuring the Rust
kernels on the same machine, and prints the measured median next to them. Run by hand:

    python3 benches/pytorch_peer.py --preset small --batch 64 --threads 2 --warmup 1 --repeats 7

It prints one line of JSON:

    {"preset", "batch", "threads", "device", "torch", "examples_per_second_median", "samples"}

where each sample is examples/second of one timed training step (forward + backward + gradient
clipping + Adam step), and the median is the upper middle of the sorted samples, as the Rust bench
takes it. Bad arguments exit with status 2 and a message; a missing torch or CUDA with status 1.

The model is the one in `src/model.rs`, `src/model/encoder.rs` and `src/model/decoder.rs`
(hierarchical decoder), with the same sizes, initial-state projections, heads and loss:

- encoder: a bidirectional 1-layer LSTM over the 64 x 27 grid; the final hidden states of both
  directions, concatenated, go through `mu` (linear) and `sigma` (linear -> softplus + 1e-4);
- z = mu + sigma * eps, with eps drawn before the timer starts (the Rust bench does the same);
- conductor: z -> tanh(linear) -> initial (h, c) of its 2 layers; one step per bar (4 bars), z as
  its input at every bar; its top-layer output per bar is the bar embedding c_u;
- bar decoder: c_u -> tanh(linear) -> initial (h, c) of its 2 layers; 16 steps per bar with input
  [previous step's 27 values, c_u], teacher forced (the target shifted one step later over all 64
  steps, then cut into bars), the 4 bars of every example run as one batch of B * 4 sequences;
- output: linear to 27 = 9 hit logits, 9 velocities (sigmoid), 9 offsets (0.5 * tanh);
- loss: BCE with logits on the hits, squared error of velocities and offsets on hit cells only
  (`head_loss = hit-cells`), each summed over steps and voices and averaged over the batch, plus
  beta (0.2) times the KL above the free-bits budget (48 bits = 48 ln 2 nats) per example;
- optimizer: Adam (lr 1e-3, betas 0.9 / 0.999, eps 1e-8) after global grad-norm clipping at 1.

Every recurrent layer is one `torch.nn.LSTM` (the fused whole-sequence layers PyTorch offers,
cuDNN on a GPU). One difference in work follows from that: `nn.LSTM` has no per-sequence input, so
z (conductor) and c_u (bar decoder) are concatenated to every step's input, and their gate
projection is computed at every step, where the Rust layers project them once per sequence and add
the result as a gate bias. Per example that is 15 * 4 extra [256] x [256, 1024] products in the
bar decoder (and 3 extra [latent] x [latent, 1024] in the conductor): about 17 % more matmul FLOPs
than the Rust model for `small` and 8 % for `groovae` (as `training_flops_per_example` in
`model_speed.rs` counts them), all of it in the input projection, which a fused layer computes for
all steps in one matmul, none in the recurrence.

Threads: `torch.set_num_threads(T)` sizes PyTorch's intra-op (OpenMP) pool; the rest of the
environment is inherited. OpenMP's default wait policy spins between the many small per-step
operations of a recurrent step, so when other processes compete for the cores the spinning threads
starve each other and throughput collapses: measure on a quiet machine, or set
`OMP_WAIT_POLICY=PASSIVE` (the Rust side keeps Candle's spinning elementwise pool at one thread
for the same reason, see `configure_threads` in `src/model/device.rs`).

Data: random hits (density 0.15) with random velocities and offsets on the hits; the numbers do not
change the work done.
"""

import argparse
import json
import math
import sys
import time

STEPS_PER_BAR = 16
BARS = 4
STEPS = BARS * STEPS_PER_BAR
VOICES = 9
FEATURES = 3 * VOICES

SIGMA_FLOOR = 1e-4
FREE_BITS_48 = 48.0 * math.log(2.0)

# Config::small() and Config::groovae() in src/model.rs (hierarchical decoder, hit-cell head loss).
_SMALL = {
    "encoder_hidden": 256,
    "latent": 128,
    "conductor_hidden": 256,
    "conductor_layers": 2,
    "decoder_hidden": 256,
    "decoder_layers": 2,
    "beta": 0.2,
    "free_bits": FREE_BITS_48,
}
PRESETS = {
    "small": _SMALL,
    "groovae": dict(_SMALL, encoder_hidden=512, latent=256),
}


def int_at_least(minimum):
    """An argparse type: a whole number of at least `minimum`."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Training throughput of DrumVAE's model in PyTorch (one line of JSON).",
    )
    parser.add_argument("--preset", required=True, choices=sorted(PRESETS))
    parser.add_argument("--batch", required=True, type=positive_int, help="examples per step")
    parser.add_argument(
        "--threads", required=True, type=positive_int, help="torch.set_num_threads"
    )
    parser.add_argument(
        "--warmup", required=True, type=non_negative_int, help="untimed steps first"
    )
    parser.add_argument("--repeats", required=True, type=positive_int, help="timed steps")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--seed", default=1, type=non_negative_int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def build(torch, cfg):
    """The model as a torch.nn.Module whose forward returns the training loss of a batch."""
    nn = torch.nn
    functional = torch.nn.functional

    class DrumVae(nn.Module):
        def __init__(self):
            super().__init__()
            he, z = cfg["encoder_hidden"], cfg["latent"]
            hc, lc = cfg["conductor_hidden"], cfg["conductor_layers"]
            hd, ld = cfg["decoder_hidden"], cfg["decoder_layers"]
            self.encoder = nn.LSTM(FEATURES, he, 1, batch_first=True, bidirectional=True)
            self.mu = nn.Linear(2 * he, z)
            self.sigma = nn.Linear(2 * he, z)
            self.conductor_init = nn.Linear(z, 2 * lc * hc)
            self.conductor = nn.LSTM(z, hc, lc, batch_first=True)
            self.bar_init = nn.Linear(hc, 2 * ld * hd)
            self.bar = nn.LSTM(FEATURES + hc, hd, ld, batch_first=True)
            self.output = nn.Linear(hd, FEATURES)
            # PyTorch's LSTM initialisation (uniform in +-1/sqrt(H)) is what the Rust layers use.

        @staticmethod
        def initial_states(linear, emb, layers, hidden):
            """tanh(linear(emb)) laid out [h0, c0, h1, c1, ...] -> (h [L, N, H], c [L, N, H])."""
            s = torch.tanh(linear(emb)).view(emb.shape[0], layers, 2, hidden)
            h = s[:, :, 0].transpose(0, 1).contiguous()
            c = s[:, :, 1].transpose(0, 1).contiguous()
            return h, c

        def forward(self, x, eps):
            b = x.shape[0]
            # Encoder: h_n is [2, B, H], forward direction first.
            _, (h_n, _) = self.encoder(x)
            both = torch.cat([h_n[0], h_n[1]], dim=1)
            mu = self.mu(both)
            sigma = functional.softplus(self.sigma(both)) + SIGMA_FLOOR
            z = mu + sigma * eps

            # Conductor: one step per bar, z as the input of every bar.
            state = self.initial_states(
                self.conductor_init, z, self.conductor.num_layers, self.conductor.hidden_size
            )
            bars_in = z.unsqueeze(1).expand(b, BARS, z.shape[1])
            c, _ = self.conductor(bars_in, state)  # [B, 4, hc]; row b * 4 + u below = bar u of b
            c = c.reshape(b * BARS, self.conductor.hidden_size)

            # Bar decoder, teacher forced: 4 bars as one batch of B * 4 sequences of 16 steps.
            state = self.initial_states(self.bar_init, c, self.bar.num_layers, self.bar.hidden_size)
            shifted = torch.cat([x.new_zeros(b, 1, FEATURES), x[:, :-1]], dim=1)
            steps_in = shifted.reshape(b * BARS, STEPS_PER_BAR, FEATURES)
            cond = c.unsqueeze(1).expand(b * BARS, STEPS_PER_BAR, c.shape[1])
            h, _ = self.bar(torch.cat([steps_in, cond], dim=2), state)
            raw = self.output(h.reshape(b * STEPS, self.bar.hidden_size)).view(b, STEPS, FEATURES)
            hit_logits = raw[..., :VOICES]
            velocity = torch.sigmoid(raw[..., VOICES : 2 * VOICES])
            offset = 0.5 * torch.tanh(raw[..., 2 * VOICES :])

            # Loss (src/model.rs `losses`, HeadLoss::HitCells).
            hits = x[..., :VOICES]
            target_velocity = x[..., VOICES : 2 * VOICES]
            target_offset = x[..., 2 * VOICES :]
            hit_bce = (
                functional.binary_cross_entropy_with_logits(hit_logits, hits, reduction="sum") / b
            )
            velocity_mse = ((velocity - target_velocity).square() * hits).sum() / b
            offset_mse = ((offset - target_offset).square() * hits).sum() / b
            kl_each = 0.5 * (mu.square() + sigma.square() - 1.0 - 2.0 * torch.log(sigma)).sum(1)
            kl_penalty = torch.relu(kl_each - cfg["free_bits"]).mean()
            return hit_bce + velocity_mse + offset_mse + cfg["beta"] * kl_penalty

    return DrumVae()


def random_batch(torch, batch, generator):
    """[B, 64, 27]: hits 0/1 (density 0.15), velocities in 0..1 and offsets in -0.5..0.5 on hits."""
    shape = (batch, STEPS, VOICES)
    hits = (torch.rand(shape, generator=generator) < 0.15).float()
    velocity = torch.rand(shape, generator=generator) * hits
    offset = (torch.rand(shape, generator=generator) - 0.5) * hits
    return torch.cat([hits, velocity, offset], dim=2)


def main(argv):
    args = parse_args(argv)
    try:
        import torch
    except ImportError as e:
        print(f"pytorch_peer: torch is not installed (pip install torch): {e}", file=sys.stderr)
        return 1
    if args.device == "cuda" and not torch.cuda.is_available():
        print("pytorch_peer: --device cuda, but torch sees no CUDA GPU", file=sys.stderr)
        return 1

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    cfg = PRESETS[args.preset]
    model = build(torch, cfg).to(device)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    params = [p for p in model.parameters()]

    generator = torch.Generator().manual_seed(args.seed)
    x = random_batch(torch, args.batch, generator).to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    samples = []
    for step in range(args.warmup + args.repeats):
        eps = torch.randn((args.batch, cfg["latent"]), generator=generator).to(device)
        sync()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = model(x, eps)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        sync()
        seconds = time.perf_counter() - start
        if not math.isfinite(loss.item()):
            print(f"pytorch_peer: the loss is not finite at step {step}", file=sys.stderr)
            return 1
        if step >= args.warmup:
            samples.append(args.batch / seconds)

    median = sorted(samples)[len(samples) // 2]
    print(
        json.dumps(
            {
                "preset": args.preset,
                "batch": args.batch,
                "threads": args.threads,
                "device": args.device,
                "torch": torch.__version__,
                "examples_per_second_median": median,
                "samples": samples,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
