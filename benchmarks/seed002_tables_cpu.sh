#!/usr/bin/env bash
# Seed 002's Table 7.1 (Fashion-MNIST, VAE vs DiffuseVAE) at CPU size: the shipped two-stage configs with
# smaller networks, 10 + 15 minutes of training on the full 54,000-image training split, then `test` on all
# 10,000 test images. Offline, Fashion-MNIST comes from Debian's dataset-fashion-mnist.
# Reports: runs/vae_fashion_mnist/eval/ and runs/diffuse_vae_fashion_mnist/eval/ (JSON + markdown).
#   bash benchmarks/seed002_tables_cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CPU="--trainer.accelerator cpu --trainer.devices 1 --data.num_workers 1"
VAE="$CPU --trainer.max_time 00:00:10:00 --model.init_args.vae.init_args.base_channels 16
  --model.init_args.reduction mean --model.init_args.kl_weight 0.001
  --model.init_args.optimizer.init_args.lr 0.001"
python cli.py fit --config sweeps/vae_fashion_mnist.yaml $VAE
python cli.py test --config sweeps/vae_fashion_mnist.yaml $VAE --ckpt_path runs/vae_fashion_mnist/checkpoints/last.ckpt
DVAE="$CPU --trainer.max_time 00:00:15:00 --model.init_args.denoiser.init_args.channels [16,32,64]
  --model.init_args.denoiser.init_args.down_sample [true,true] --model.init_args.denoiser.init_args.attention [false,false]
  --model.init_args.denoiser.init_args.num_layers 1 --model.init_args.denoiser.init_args.t_emb_dim 64
  --model.init_args.optimizer.init_args.lr 0.002 --model.init_args.warmup_steps 200"
python cli.py fit --config sweeps/diffuse_vae_fashion_mnist.yaml $DVAE
python cli.py test --config sweeps/diffuse_vae_fashion_mnist.yaml $DVAE \
  --ckpt_path runs/diffuse_vae_fashion_mnist/checkpoints/last.ckpt \
  --sampling.sampler DDIMSampler --sampling.sampler.steps 20 --sampling.sampler.eta 0.0 --data.batch_size 500
