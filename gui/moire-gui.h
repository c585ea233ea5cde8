/* moire-gui.h — libmoire-gui: the widgets and helpers shared by Moiré Studio and the GIMP
 * plug-in. Include this one header. */
#pragma once

#include "moire-gen-settings.h"
#include "moire-generation-panel.h"
#include "moire-gui-util.h"
#include "moire-history.h"
#include "moire-history-item.h"
#include "moire-job.h"
#include "moire-model-handle.h"
#include "moire-model-locator.h"
#include "moire-seed.h"
#include "moire-vae-handle.h"
