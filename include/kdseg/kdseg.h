/* kdseg: the umbrella header. */
#ifndef KDSEG_H
#define KDSEG_H

#include "kdseg/status.h"
#include "kdseg/fs.h"
#include "kdseg/device.h"
#include "kdseg/tensor.h"
#include "kdseg/model.h"
#include "kdseg/train.h"
#include "kdseg/tensorfile.h"
#include "kdseg/postproc.h"
#include "kdseg/metrics.h"
#include "kdseg/plot.h"

#include "kdseg/data.h"
#include "kdseg/recipe.h"
#include "kdseg/domain.h"

#endif
