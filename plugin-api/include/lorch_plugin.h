/*
 * lorch plugin ABI, version 1.
 *
 * A lorch plugin is a shared library (.so on Linux, .dylib on macOS) exporting one function,
 * `lorch_plugin_entry`, that returns a pointer to a static LorchPluginHeader. This header is the
 * whole contract; docs/plugin-abi.md explains it, and lorch-plugin-api implements it for Rust.
 *
 * Rules:
 *  - lorch reads `abi_version` first and refuses the plugin unless it equals
 *    LORCH_PLUGIN_ABI_VERSION; then it checks `header_size`.
 *  - Strings are UTF-8, passed as pointer + length (LorchStr), not NUL-terminated.
 *  - Structured data crosses as JSON (shapes in docs/plugin-abi.md).
 *  - Memory is freed by whoever allocated it. Strings passed into a call are borrowed for that
 *    call only; copy what you keep. The metadata string must stay valid while the library is
 *    loaded (lorch never unloads plugins), so a static string is ideal.
 *  - The host callbacks are thread-safe and valid until `run` returns, not after.
 */
#ifndef LORCH_PLUGIN_H
#define LORCH_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LORCH_PLUGIN_ABI_VERSION 1u
#define LORCH_PLUGIN_ENTRY_SYMBOL "lorch_plugin_entry"

/* Return codes of `run`. */
#define LORCH_RUN_OK 0          /* the job succeeded */
#define LORCH_RUN_FAILED 1      /* the job failed; call host->fail first */
#define LORCH_RUN_PANICKED 2    /* the job crashed in a way the plugin caught */
#define LORCH_RUN_UNKNOWN_JOB 3 /* no job of that name in this plugin */
#define LORCH_RUN_BAD_REQUEST 4 /* the request JSON could not be read */

/* Return codes of `emit`. */
#define LORCH_EMIT_OK 0           /* stored */
#define LORCH_EMIT_INVALID 1      /* not JSON, empty event_type, or a reserved `job.*` type */
#define LORCH_EMIT_NOT_RECORDED 2 /* the host could not store it */

/* Return codes of `upsert`: all objects stored, or none. */
#define LORCH_UPSERT_OK 0           /* stored */
#define LORCH_UPSERT_INVALID 1      /* not JSON, or an object breaks the rules (lorch logs which) */
#define LORCH_UPSERT_NOT_RECORDED 2 /* the host could not store them */

/* Log levels. */
#define LORCH_LOG_ERROR 1
#define LORCH_LOG_WARN 2
#define LORCH_LOG_INFO 3
#define LORCH_LOG_DEBUG 4
#define LORCH_LOG_TRACE 5

typedef struct LorchStr {
    const uint8_t *ptr;
    size_t len;
} LorchStr;

/* Given by lorch to `run`. */
typedef struct LorchHost {
    uint32_t size; /* sizeof(LorchHost) as lorch was built */
    void *ctx;     /* pass back to every callback */
    /* {"event_type": "...", "payload": {...}, "idem_key": "..." | null} -> LORCH_EMIT_* */
    int32_t (*emit)(void *ctx, LorchStr event_json);
    void (*log)(void *ctx, int32_t level, LorchStr message);
    /* non-zero once the run should stop */
    int32_t (*is_cancelled)(void *ctx);
    /* {"message": "...", "chain": ["cause", ...], "permanent": false}; plain text is accepted
       as the message */
    void (*fail)(void *ctx, LorchStr failure_json);
    /* Appended to version 1: call only when LORCH_HOST_HAS_UPSERT(host).
       {"objects": [{"object_type": "...", "idem_key": "...", "payload": {...},
       "external_id"?, "schema_ref"?, "connection_name"?, "source_system"?}]} -> LORCH_UPSERT_* */
    int32_t (*upsert)(void *ctx, LorchStr objects_json);
} LorchHost;

/* Whether the lorch running the job has `upsert` (an older one passes a shorter LorchHost). */
#define LORCH_HOST_HAS_UPSERT(host) \
    ((host)->size >= offsetof(LorchHost, upsert) + sizeof((host)->upsert))

/* What `lorch_plugin_entry` returns. */
typedef struct LorchPluginHeader {
    uint32_t abi_version; /* LORCH_PLUGIN_ABI_VERSION */
    uint32_t header_size; /* sizeof(LorchPluginHeader) */
    /* {"jobs": [{"package", "name", "description", "params": [{"name", "type", "required",
       "default", "help"}]}]}; valid while the library is loaded */
    LorchStr (*metadata)(void);
    /* job is "PACKAGE/JOB"; request_json is {"run_id", "package", "job", "attempt", "account",
       "since": {"raw", "utc"} | null, "until": ..., "params": {...}} -> LORCH_RUN_* */
    int32_t (*run)(const LorchHost *host, LorchStr job, LorchStr request_json);
} LorchPluginHeader;

/* The one symbol a plugin exports. */
const LorchPluginHeader *lorch_plugin_entry(void);

#ifdef __cplusplus
}
#endif

#endif /* LORCH_PLUGIN_H */
