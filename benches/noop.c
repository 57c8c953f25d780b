/* A plugin of one job, bench/noop, that does nothing: what benches/pipelines.sh and
   benches/status.sh run to measure lorch's own cost. */
#include "lorch_plugin.h"
static const char METADATA[] = "{\"jobs\": [{\"package\": \"bench\", \"name\": \"noop\", \"description\": \"Does nothing.\", \"params\": []}]}";
static LorchStr metadata(void) { LorchStr s = {(const uint8_t *)METADATA, sizeof METADATA - 1}; return s; }
static int32_t run(const LorchHost *host, LorchStr job, LorchStr request) { (void)host; (void)job; (void)request; return LORCH_RUN_OK; }
static const LorchPluginHeader HEADER = { LORCH_PLUGIN_ABI_VERSION, sizeof(LorchPluginHeader), metadata, run };
const LorchPluginHeader *lorch_plugin_entry(void) { return &HEADER; }
