cd /work/main && . .venv/bin/activate
for v in recommended:/work/exp/cv/out/recommended/fold-3-seed-0/seed-0/n-35/run steps-3000:/work/exp/s3k/out/steps-3000/fold-3-seed-0/seed-0/n-35/run; do
  name=${v%%:*}; run=${v#*:}
  echo "$(date +%T) start $name $run" >> /work/exp/ood3k/log
  nice -n 19 python benchmarks/raw_t1_ood.py --run $run --out /work/exp/ood3k/$name >> /work/exp/ood3k/$name.out 2>&1
  echo "$(date +%T) done $name rc=$?" >> /work/exp/ood3k/log
done
