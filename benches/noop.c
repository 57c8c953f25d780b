/* A plugin of two jobs that do next to nothing, for benches/pipelines.sh and benches/status.sh
   to measure lorch's own cost: bench/noop does nothing; bench/chat prints 10 lines to stdout
   and logs one, the cost of a run's log (docs/logs.md). */
#include <stdio.h>
#include <string.h>
#include "lorch_plugin.h"
static const char METADATA[] = "{\"jobs\": ["
    "{\"package\": \"bench\", \"name\": \"noop\", \"description\": \"Does nothing.\", \"params\": []},"
    "{\"package\": \"bench\", \"name\": \"chat\", \"description\": \"Prints 10 lines, logs one.\", \"params\": []}]}";
static LorchStr metadata(void) { LorchStr s = {(const uint8_t *)METADATA, sizeof METADATA - 1}; return s; }
static int32_t run(const LorchHost *host, LorchStr job, LorchStr request) {
    (void)request;
    if (job.len == 10 && memcmp(job.ptr, "bench/chat", 10) == 0) {
        for (int i = 0; i < 10; i++) printf("line %d\n", i);
        static const char DONE[] = "done";
        LorchStr message = {(const uint8_t *)DONE, sizeof DONE - 1};
        host->log(host->ctx, 3, message);
    }
    return LORCH_RUN_OK;
}
static const LorchPluginHeader HEADER = { LORCH_PLUGIN_ABI_VERSION, sizeof(LorchPluginHeader), metadata, run };
const LorchPluginHeader *lorch_plugin_entry(void) { return &HEADER; }
