/* kdseg: the umbrella header, every public header of the library. */
#ifndef KDSEG_H
#define KDSEG_H

#include "kdseg/status.h"
#include "kdseg/fs.h"
#include "kdseg/rng.h"
#include "kdseg/device.h"
#include "kdseg/tensor.h"
#include "kdseg/tensorfile.h"
#include "kdseg/model.h"
#include "kdseg/train.h"
#include "kdseg/data.h"
#include "kdseg/postproc.h"
#include "kdseg/metrics.h"
#include "kdseg/infer.h"
#include "kdseg/plot.h"
#include "kdseg/sched.h"
#include "kdseg/tune.h"
#include "kdseg/dist.h"
#include "kdseg/kd.h"
#include "kdseg/recipe.h"
#include "kdseg/domain.h"

#endif
