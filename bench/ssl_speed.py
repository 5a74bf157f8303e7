"""Time per clip of the pre-trained SSL frontends: forward (embedding) and one fine-tuning step.

    python -m bench.ssl_speed [--models hubert,wav2vec2,wavlm,unispeech-sat,beats] [--sizes tiny,base]
                              [--seconds 10] [--batch 2] [--reps 3] [--device cpu] [--threads N]

For every model and size the backbone is built randomly initialised (no weights are needed: the
cost does not depend on the values) - ``tiny``: the 2-layer x 32 test config, ``base``: the
standard base config of each model (12 layers x 768; see
:func:`asdcore.models.ssl.build_backbone`) - and wrapped exactly as the systems use it
(:class:`asdcore.models.ssl.SSLEmbedder`, mean pooling, 256-d projection; sub-cluster AdaCos head
with 16 sub-clusters over 10 classes; Adam with the two learning rates; feature encoder frozen as
by default). Timed, after one untimed warm-up of each:

* forward: ``no_grad`` embedding of a batch of ``--batch`` clips of ``--seconds`` s, eval mode;
* step: forward + loss + backward + optimiser step on the same batch, train mode.

Both are reported in seconds per clip (median over ``--reps`` repetitions / batch size), with the
parameter count. Clips longer than ``--chunk`` seconds are chunked as in the systems.
"""
from __future__ import annotations

import argparse

from bench.timing import median_seconds


def bench_one(model: str, size: str, seconds: float, batch: int, reps: int, chunk: float, device) -> dict:
    import torch

    from asdcore.losses import SubClusterAdaCos
    from asdcore.models.ssl import SSLEmbedder, build_backbone, count_parameters
    from asdcore.systems.ssl import SSLSettings, SSLSystem

    torch.manual_seed(0)
    backbone = build_backbone(model, size=size)
    params = count_parameters(backbone)
    emb = SSLEmbedder(backbone, embed_dim=256, pooling="mean", chunk_seconds=chunk).to(device)
    head = SubClusterAdaCos(10, n_subclusters=16, embed_dim=256).to(device)
    waves = (0.1 * torch.randn(batch, int(seconds * 16000))).to(device)
    labels = torch.arange(batch, device=device) % 10

    def forward():
        emb.eval()
        with torch.no_grad():
            emb(waves)
        if device.type == "cuda":
            torch.cuda.synchronize()

    fwd = median_seconds(forward, reps) / batch
    backbone.freeze(feature_encoder=True, layers=0)
    opt = torch.optim.Adam(SSLSystem.param_groups(emb, head, SSLSettings()))

    def step():
        emb.train()
        head.train()
        loss = head(emb(waves), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    stp = median_seconds(step, reps) / batch
    return {"model": model, "size": size, "params": params, "forward_s": fwd, "step_s": stp}


def main(argv: list[str] | None = None) -> int:
    import torch

    from asdcore.models.ssl import SSL_MODELS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(SSL_MODELS))
    p.add_argument("--sizes", default="tiny,base")
    p.add_argument("--seconds", type=float, default=10.0, help="clip length in seconds (default 10)")
    p.add_argument("--batch", type=int, default=2, help="clips per batch (default 2)")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions after one warm-up (default 3)")
    p.add_argument("--chunk", type=float, default=12.0, help="chunk_seconds of the embedder (default 12)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(SSL_MODELS))
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(SSL_MODELS)}")
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    print(f"device {device}, {torch.get_num_threads()} thread(s); clips of {args.seconds:g} s, batch {args.batch}, "
          f"median of {args.reps} rep(s) after a warm-up; seconds per clip")
    header = f"{'model':<14} {'size':<5} {'parameters':>12} {'forward s/clip':>15} {'fine-tune step s/clip':>22}"
    print(header)
    print("-" * len(header))
    for size in sizes:
        for model in models:
            r = bench_one(model, size, args.seconds, args.batch, args.reps, args.chunk, device)
            print(f"{r['model']:<14} {r['size']:<5} {r['params']:>12,} {r['forward_s']:>15.4f} {r['step_s']:>22.4f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
