python benchmarks/raw_t1_ood.py --run /work/exp/tlev/out/torch-recommended/fold-0-seed-1/seed-1/n-34/run --out OUT/torch-recommended > OUT/torch-recommended.log 2>&1
python benchmarks/raw_t1_ood.py --run /work/exp/tlev/out/torch-no-scanner-aug/fold-0-seed-1/seed-1/n-34/run --out OUT/torch-no-scanner-aug > OUT/torch-no-scanner-aug.log 2>&1
# fold 1, seed 1 (into fold-1-seed-1/)
python benchmarks/raw_t1_ood.py --run /work/exp/tlev/out/torch-recommended/fold-1-seed-1/seed-1/n-34/run --out OUT/fold-1-seed-1/torch-recommended
python benchmarks/raw_t1_ood.py --run /work/exp/tlev/out/torch-no-scanner-aug/fold-1-seed-1/seed-1/n-34/run --out OUT/fold-1-seed-1/torch-no-scanner-aug
