#!/usr/bin/env bash
# The adversarial VQ-VAE (vqgan) against the VAE and the VQ-VAE on a folder of faces, every model at its
# defaults, one after another on one machine (docs/benchmarks.md, "Faces with edges"):
#
#   pip install -e ".[score,bench]"
#   mkdir /tmp/faces-bench && cd /tmp/faces-bench
#   bash ~/vqgen/benchmarks/faces_adversarial.sh ~/vqgen/../shared/datasets/anime-faces-hub
#
# About 95 minutes on a 2-core CPU. Times are in times.txt, each command's output in logs/, the scores in
# each run's scores.json. The runs and their pictures stay in this folder: keep them out of the repository
# (the faces are copyrighted, and so is what a model makes of them).
set -uo pipefail
faces=${1:?usage: faces_adversarial.sh FACES_FOLDER}
command -v vqgen > /dev/null || { echo "vqgen is not on PATH: activate the environment it is installed in"; exit 1; }
mkdir -p logs

timed() {   # timed NAME COMMAND...: the command's output in logs/NAME.log, its wall time in times.txt
    local name=$1 start end
    shift
    start=$(date +%s%N)
    "$@" > "logs/$name.log" 2>&1
    local rc=$?
    end=$(date +%s%N)
    echo "$name rc=$rc $(((end - start) / 1000000)) ms" >> times.txt
}

# Training time first, each alone on the machine: the VQ-VAE's default against the adversarial recipe's,
# and the VAE's.
timed vqvae vqgen train --model vqvae --dataset "$faces" --name vqvae
timed vqgan vqgen train --model vqgan --dataset "$faces" --name vqgan
timed vae vqgen train --model vae --dataset "$faces" --name vae
touch timed.done   # what follows is not timed: other work may share the machine from here

# Samplers.
timed prior-vqvae vqgen train --model prior --run runs/vqvae --name prior-vqvae
timed prior-vqgan vqgen train --model prior --run runs/vqgan --name prior-vqgan

# The prior's sampling temperature and top-k over the VQGAN's codes, by FID of 500 samples.
for tk in "0.7 0" "0.85 0" "1.0 0" "1.0 100"; do
    set -- $tk
    timed "sweep-t$1-k$2" vqgen score --run runs/prior-vqgan --n 500 --temperature "$1" --top-k "$2"
done

best=$(python - <<'EOF'
import json
scores = json.load(open("runs/prior-vqgan/scores.json"))["scores"]
fid = {(s["options"]["temperature"], s["options"]["top_k"]): s["figures"]["fid"]
       for s in scores if s["what"] == "samples" and s["network"] == "inception" and s["n"] == 500}
t, k = min(fid, key=fid.get)
print(t, k)
EOF
)
set -- $best
sampling=(--temperature "$1" --top-k "$2")
echo "lowest FID of 500 samples at temperature $1, top-k $2" >> times.txt

# Scores: 1,000 reconstructions (rFID, PSNR, SSIM) and 1,000 samples (gFID, KID), the priors at that setting.
timed score-vqvae vqgen score --run runs/vqvae --n 1000 "${sampling[@]}"
timed score-vqgan vqgen score --run runs/vqgan --n 1000 "${sampling[@]}"

# Two more seeds of the adversarial recipe, with their priors.
for seed in 1 2; do
    timed "vqgan-seed$seed" vqgen train --model vqgan --dataset "$faces" --name "vqgan-seed$seed" --seed "$seed"
    timed "prior-vqgan-seed$seed" vqgen train --model prior --run "runs/vqgan-seed$seed" --name "prior-vqgan-seed$seed"
    timed "score-vqgan-seed$seed" vqgen score --run "runs/vqgan-seed$seed" --n 1000 "${sampling[@]}"
done

# The ablation, one part off at a time, scored on reconstructions (rFID, PSNR): no augmentation for the
# discriminator, a fixed adversarial weight instead of the adaptive one, the discriminator from the first step.
printf 'diffaugment: none\n' > no-augment.yaml
# (the fixed weight: the mean of the default run's adaptive weight over its adversarial epochs)
printf 'adaptive: false\ndisc_weight: %s\n' "$(python -c '
import csv
w = [float(r["train_weight"]) for r in csv.DictReader(open("runs/vqgan/metrics.csv")) if float(r["train_weight"]) > 0]
print(f"{sum(w) / len(w):.4g}")')" > fixed-weight.yaml
printf 'disc_start: 0.0\n' > from-start.yaml
for part in no-augment fixed-weight from-start; do
    timed "vqgan-$part" vqgen train --model vqgan --dataset "$faces" --config "$part.yaml" --name "vqgan-$part"
    timed "score-vqgan-$part" vqgen score --run "runs/vqgan-$part" --n 1000
done

# Sharpness of samples and reconstructions, PSNR and SSIM on the held-out faces.
timed faces python "$(dirname "$0")/faces.py" --vqvae runs/vqvae --vqgan runs/vqgan \
    --vqgan runs/vqgan-seed1 --vqgan runs/vqgan-seed2 --n 200 --grids grids "${sampling[@]}"

# The VAE's scores.
timed score-vae vqgen score --run runs/vae --n 1000
timed faces-vae python "$(dirname "$0")/faces.py" --vae runs/vae --n 200 --grids grids
