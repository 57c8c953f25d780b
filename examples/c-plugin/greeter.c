/*
 * Example lorch plugin written in C, against plugin-api/include/lorch_plugin.h.
 *
 *   cc -shared -fPIC -I ../../plugin-api/include -o libgreeter.so greeter.c
 *   lorch --plugin-path . run-job greeter hello --param who=Ada
 *
 * Package `greeter`, job `hello`: logs a greeting, stores a `greeter_greeting` object (keyed
 * `greeter:WHO`) and emits one `greeter.hello` event.
 * `--param who=nobody` makes it fail, to show how a C job reports an error.
 */
#include <stdio.h>
#include <string.h>

#include "lorch_plugin.h"

static const char METADATA[] =
    "{\"jobs\": [{"
    "\"package\": \"greeter\", \"name\": \"hello\","
    "\"description\": \"Greets someone from C.\\n\\nLogs a greeting and emits one greeter.hello event.\","
    "\"params\": [{\"name\": \"who\", \"type\": \"string\", \"default\": \"world\", \"help\": \"Whom to greet\"}]"
    "}]}";

static LorchStr str_of(const char *s) {
    LorchStr str = {(const uint8_t *)s, strlen(s)};
    return str;
}

static LorchStr metadata(void) { return str_of(METADATA); }

/* Copies the string value of "key" from lorch's compact request JSON. A real plugin would use
   a JSON library; this keeps the example dependency-free (values with escapes are not
   handled). */
static int string_param(LorchStr request, const char *key, char *out, size_t cap) {
    char needle[64];
    snprintf(needle, sizeof needle, "\"%s\":\"", key);
    char buf[4096];
    size_t n = request.len < sizeof buf - 1 ? request.len : sizeof buf - 1;
    memcpy(buf, request.ptr, n);
    buf[n] = '\0';
    const char *start = strstr(buf, needle);
    if (!start) return 0;
    start += strlen(needle);
    const char *end = strchr(start, '"');
    if (!end || (size_t)(end - start) >= cap) return 0;
    memcpy(out, start, (size_t)(end - start));
    out[end - start] = '\0';
    return 1;
}

static int32_t run(const LorchHost *host, LorchStr job, LorchStr request) {
    if (job.len != strlen("greeter/hello") || memcmp(job.ptr, "greeter/hello", job.len) != 0) {
        host->fail(host->ctx, str_of("this plugin only has greeter/hello"));
        return LORCH_RUN_UNKNOWN_JOB;
    }
    char who[128] = "world";
    string_param(request, "who", who, sizeof who);
    if (strcmp(who, "nobody") == 0) {
        host->fail(host->ctx, str_of("{\"message\": \"nobody to greet\", \"chain\": [\"who=nobody\"]}"));
        return LORCH_RUN_FAILED;
    }

    char line[256];
    snprintf(line, sizeof line, "hello, %s", who);
    host->log(host->ctx, LORCH_LOG_INFO, str_of(line));

    /* One object per person greeted; an older lorch has no upsert, and the greeting goes on. */
    if (LORCH_HOST_HAS_UPSERT(host)) {
        char object[512];
        snprintf(object, sizeof object,
                 "{\"objects\": [{\"object_type\": \"greeter_greeting\", \"idem_key\": \"greeter:%s\", "
                 "\"payload\": {\"who\": \"%s\"}}]}",
                 who, who);
        if (host->upsert(host->ctx, str_of(object)) != LORCH_UPSERT_OK) {
            host->fail(host->ctx, str_of("lorch did not store the greeting (see its log for why)"));
            return LORCH_RUN_FAILED;
        }
    }

    char event[512];
    snprintf(event, sizeof event, "{\"event_type\": \"greeter.hello\", \"payload\": {\"who\": \"%s\"}}", who);
    if (host->emit(host->ctx, str_of(event)) != LORCH_EMIT_OK) {
        host->fail(host->ctx, str_of("could not record greeter.hello"));
        return LORCH_RUN_FAILED;
    }
    return LORCH_RUN_OK;
}

static const LorchPluginHeader HEADER = {
    LORCH_PLUGIN_ABI_VERSION,
    sizeof(LorchPluginHeader),
    metadata,
    run,
};

const LorchPluginHeader *lorch_plugin_entry(void) { return &HEADER; }
