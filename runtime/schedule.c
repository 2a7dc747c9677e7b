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
}
