/* kdseg: the umbrella header. */
#ifndef KDSEG_H
#define KDSEG_H

#include "kdseg/status.h"
#include "kdseg/device.h"
#include "kdseg/tensor.h"
#include "kdseg/data.h"

#endif
