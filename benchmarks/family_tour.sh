#!/usr/bin/env bash
# Every command for one model family, at toy size on the embedded digits: what issue 37
# asks of each family ("pretrain, fine-tune (also at another resolution), evaluate,
# few-shot-probe, predict, export and benchmark through the CLI"), each line's exit code
# and wall time. `mixer` on PATH; OUT is created (and emptied) for the runs.
#   bash benchmarks/family_tour.sh vit N/2 /var/tmp/tour
#   bash benchmarks/family_tour.sh gmlp 2x32-6/2 /var/tmp/tour
#   bash benchmarks/family_tour.sh resmlp 2x32/2 /var/tmp/tour
set -u
family=$1 variant=$2 out=$3/$1
rm -rf "$out" && mkdir -p "$out" && cd "$out" || exit 2
python3 -c "import zlib, struct, sys
raw = b''.join(b'\x00' + bytes((x * 31 + y * 17 + c * 50) % 256 for x in range(8) for c in range(3)) for y in range(8))
chunk = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d))
sys.stdout.buffer.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 8, 8, 8, 2, 0, 0, 0)) + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))" > image.png
step() {
    local start=$SECONDS
    "$@" > last.out 2> last.err
    local code=$?
    printf '%-3s %4ss  mixer %s\n' "$code" "$((SECONDS - start))" "${*:2}"
    [ "$code" -eq 0 ] || tail -n 2 last.err
}
model=(--set "model.family=$family" --variant "$variant")
step mixer pretrain "${model[@]}" --steps 60 --batch-size 64 --workdir run
step mixer finetune --init run --data digits --resolution 16 --steps 30 --batch-size 64 --workdir ft16
step mixer eval --init ft16
step mixer eval --init run --resolution 16
step mixer fewshot --init run --shots 5
step mixer predict --init run image.png
step mixer export --init run --format stablehlo --out model.stablehlo
step mixer export --init run --format onnx --int8 dynamic --out model.onnx
step mixer convert run model.safetensors
step mixer info --checkpoint model.safetensors
step mixer bench "${model[@]}" --resolution 8 --mode forward --batch-size 64
step mixer plot weights --init run
step mixer segment --init run --steps 20 --workdir seg
step mixer permute "${model[@]}" --mode patch --no-reference --steps 20 --baseline none --workdir permute
