"""asv benchmarks of fastnorm (see ../asv.conf.json); inputs come from fastnorm.bench's registry."""
