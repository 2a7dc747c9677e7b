// schedule.c — the per-step scalars: learning rate (linear warm-up, then cosine decay) and the
// AdamW bias corrections. They depend only on the step index and the plan, so a resumed run
// and an uninterrupted one use the same values.
#include <math.h>

#include "dhxrt.h"

double dhx_lr_at(const dhx_plan_train *t, int64_t step) {
  if (step < t->warmup_steps) return t->lr * (double)(step + 1) / (double)t->warmup_steps;
  // Cosine from lr (first step after warm-up) towards lr*r over the plan's remaining steps.
  int64_t span = t->steps - t->warmup_steps;
  double progress = (double)(step - t->warmup_steps) / (double)(span > 1 ? span : 1);
  if (progress > 1) progress = 1;  // steps beyond the plan's length stay at the floor
  double r = t->lr_min_ratio;
  return t->lr * (r + (1.0 - r) * 0.5 * (1.0 + cos(M_PI * progress)));
}

void dhx_set_step_registers(const dhx_plan_train *t, int64_t step, double regs[DHX_REG_COUNT]) {
  regs[DHX_REG_LR] = dhx_lr_at(t, step);
  regs[DHX_REG_BC1] = 1.0 - pow(t->beta1, (double)(step + 1));
  regs[DHX_REG_BC2] = 1.0 - pow(t->beta2, (double)(step + 1));
  regs[DHX_REG_CLIP_SCALE] = 1.0;
  regs[DHX_REG_GRAD_NORM] = 0.0;
  regs[DHX_REG_NOISE_SEED] = (double)dhx_noise_seed(t->seed, step);
}

// splitmix64's finaliser over the plan's seed and the step, cut to 53 bits so that a double
// holds it exactly: every step rounds with fresh numbers, and a resumed run with the same ones.
int64_t dhx_noise_seed(uint64_t seed, int64_t step) {
  uint64_t z = seed + (uint64_t)(step + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (int64_t)(z >> 11);
}
