/* The C API end to end: null and bad arguments, key-value, batches, scans,
 * transactions (commit, abort, conflict), SQL as an Arrow C stream, errors, and freeing
 * everything (run under AddressSanitizer + LeakSanitizer by ffi/tests/run_c_tests.sh). */
#include "lightning_db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures = 0;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__,  \
                    __LINE__, #cond, ldb_last_error_message());                       \
            failures++;                                                              \
        }                                                                            \
    } while (0)

#define KEY(s) (const uint8_t *)(s), strlen(s)

static void test_null_arguments(void) {
    LdbDatabase *db = NULL;
    CHECK(ldb_open(NULL, LDB_OPEN_OR_CREATE, &db) == LDB_ERR_NULL_ARGUMENT);
    CHECK(strlen(ldb_last_error_message()) > 0);
    CHECK(ldb_open("/tmp/x", LDB_OPEN_OR_CREATE, NULL) == LDB_ERR_NULL_ARGUMENT);
    CHECK(ldb_put(NULL, KEY("k"), KEY("v")) == LDB_ERR_NULL_ARGUMENT);
    uint8_t *v = NULL;
    size_t vlen = 0;
    CHECK(ldb_get(NULL, KEY("k"), &v, &vlen) == LDB_ERR_NULL_ARGUMENT);
    CHECK(ldb_delete(NULL, KEY("k")) == LDB_ERR_NULL_ARGUMENT);
    CHECK(ldb_batch_put(NULL, KEY("k"), KEY("v")) == LDB_ERR_NULL_ARGUMENT);
    CHECK(ldb_write_batch(NULL, NULL) == LDB_ERR_NULL_ARGUMENT);
    CHECK(ldb_scan(NULL, NULL, 0, NULL, 0, NULL) == LDB_ERR_NULL_ARGUMENT);
    CHECK(ldb_iterator_next(NULL, NULL, NULL, NULL, NULL) == LDB_ERR_NULL_ARGUMENT);
    CHECK(ldb_txn_begin(NULL, NULL) == LDB_ERR_NULL_ARGUMENT);
    CHECK(ldb_txn_put(NULL, KEY("k"), KEY("v")) == LDB_ERR_NULL_ARGUMENT);
    CHECK(ldb_txn_commit(NULL) == LDB_ERR_NULL_ARGUMENT);
    CHECK(ldb_txn_abort(NULL) == LDB_ERR_NULL_ARGUMENT);
    CHECK(ldb_sql(NULL, "SELECT 1", NULL) == LDB_ERR_NULL_ARGUMENT);
    /* Free functions and close accept null. */
    CHECK(ldb_close(NULL) == LDB_OK);
    ldb_free_bytes(NULL, 0);
    ldb_batch_free(NULL);
    ldb_iterator_free(NULL);
    ldb_txn_free(NULL);
}

static void test_kv(LdbDatabase *db) {
    CHECK(ldb_put(db, KEY("hello"), KEY("world")) == LDB_OK);
    uint8_t *v = NULL;
    size_t vlen = 0;
    CHECK(ldb_get(db, KEY("hello"), &v, &vlen) == LDB_OK);
    CHECK(vlen == 5 && memcmp(v, "world", 5) == 0);
    ldb_free_bytes(v, vlen);
    /* A null key pointer with length 0 is the empty key; with a length it is an error. */
    CHECK(ldb_put(db, NULL, 3, KEY("x")) == LDB_ERR_NULL_ARGUMENT);
    CHECK(ldb_get(db, KEY("hello"), NULL, &vlen) == LDB_ERR_NULL_ARGUMENT);
    CHECK(ldb_delete(db, KEY("hello")) == LDB_OK);
    CHECK(ldb_get(db, KEY("hello"), &v, &vlen) == LDB_NOT_FOUND);
    CHECK(v == NULL && vlen == 0);
    /* An empty value is a value. */
    CHECK(ldb_put(db, KEY("empty"), NULL, 0) == LDB_OK);
    CHECK(ldb_get(db, KEY("empty"), &v, &vlen) == LDB_OK && vlen == 0);
    ldb_free_bytes(v, vlen);
    CHECK(ldb_delete(db, KEY("empty")) == LDB_OK);
}

static void test_batch_and_scan(LdbDatabase *db) {
    LdbBatch *b = NULL;
    CHECK(ldb_batch_new(&b) == LDB_OK);
    char k[32], val[32];
    for (int i = 0; i < 100; i++) {
        snprintf(k, sizeof k, "b%03d", i);
        snprintf(val, sizeof val, "v%d", i);
        CHECK(ldb_batch_put(b, KEY(k), KEY(val)) == LDB_OK);
    }
    CHECK(ldb_batch_delete(b, KEY("b050")) == LDB_OK);
    CHECK(ldb_write_batch(db, b) == LDB_OK);
    ldb_batch_free(b);

    LdbIterator *it = NULL;
    CHECK(ldb_scan(db, KEY("b010"), KEY("b060"), &it) == LDB_OK);
    const uint8_t *key, *value;
    size_t klen, vlen;
    int n = 0, expect = 10;
    LdbStatus s;
    while ((s = ldb_iterator_next(it, &key, &klen, &value, &vlen)) == LDB_OK) {
        if (expect == 50) expect++;
        snprintf(k, sizeof k, "b%03d", expect);
        snprintf(val, sizeof val, "v%d", expect);
        CHECK(klen == strlen(k) && memcmp(key, k, klen) == 0);
        CHECK(vlen == strlen(val) && memcmp(value, val, vlen) == 0);
        expect++;
        n++;
    }
    CHECK(s == LDB_DONE);
    CHECK(n == 49);
    CHECK(ldb_iterator_next(it, &key, &klen, &value, NULL) == LDB_ERR_NULL_ARGUMENT);
    ldb_iterator_free(it);

    /* Unbounded on both sides. */
    CHECK(ldb_scan(db, NULL, 0, NULL, 0, &it) == LDB_OK);
    n = 0;
    while (ldb_iterator_next(it, &key, &klen, &value, &vlen) == LDB_OK) n++;
    CHECK(n == 99);
    ldb_iterator_free(it);
}

static void test_transactions(LdbDatabase *db) {
    LdbTransaction *t = NULL;
    CHECK(ldb_txn_begin(db, &t) == LDB_OK);
    CHECK(ldb_txn_put(t, KEY("t1"), KEY("one")) == LDB_OK);
    uint8_t *v = NULL;
    size_t vlen = 0;
    CHECK(ldb_txn_get(t, KEY("t1"), &v, &vlen) == LDB_OK && vlen == 3);
    ldb_free_bytes(v, vlen);
    CHECK(ldb_get(db, KEY("t1"), &v, &vlen) == LDB_NOT_FOUND); /* not yet visible */
    CHECK(ldb_txn_commit(t) == LDB_OK);
    CHECK(ldb_txn_commit(t) == LDB_ERR_TRANSACTION_NOT_FOUND); /* finished */
    ldb_txn_free(t);
    CHECK(ldb_get(db, KEY("t1"), &v, &vlen) == LDB_OK);
    ldb_free_bytes(v, vlen);

    CHECK(ldb_txn_begin(db, &t) == LDB_OK);
    CHECK(ldb_txn_put(t, KEY("t2"), KEY("two")) == LDB_OK);
    CHECK(ldb_txn_abort(t) == LDB_OK);
    ldb_txn_free(t);
    CHECK(ldb_get(db, KEY("t2"), &v, &vlen) == LDB_NOT_FOUND);

    /* Two transactions write the same key: the second commit loses. */
    LdbTransaction *a = NULL, *b = NULL;
    CHECK(ldb_txn_begin(db, &a) == LDB_OK);
    CHECK(ldb_txn_begin(db, &b) == LDB_OK);
    CHECK(ldb_txn_get(a, KEY("t1"), &v, &vlen) == LDB_OK);
    ldb_free_bytes(v, vlen);
    CHECK(ldb_txn_get(b, KEY("t1"), &v, &vlen) == LDB_OK);
    ldb_free_bytes(v, vlen);
    CHECK(ldb_txn_put(a, KEY("t1"), KEY("a")) == LDB_OK);
    CHECK(ldb_txn_put(b, KEY("t1"), KEY("b")) == LDB_OK);
    CHECK(ldb_txn_commit(a) == LDB_OK);
    CHECK(ldb_txn_commit(b) == LDB_ERR_TRANSACTION_CONFLICT);
    CHECK(strstr(ldb_last_error_message(), "onflict") != NULL);
    ldb_txn_free(a);
    ldb_txn_free(b);

    /* Freeing an open transaction aborts it. */
    CHECK(ldb_txn_begin(db, &t) == LDB_OK);
    CHECK(ldb_txn_put(t, KEY("t3"), KEY("three")) == LDB_OK);
    ldb_txn_free(t);
    CHECK(ldb_get(db, KEY("t3"), &v, &vlen) == LDB_NOT_FOUND);
}

static void run_sql(LdbDatabase *db, const char *q) {
    struct ArrowArrayStream s;
    CHECK(ldb_sql(db, q, &s) == LDB_OK);
    s.release(&s);
}

static void test_sql(LdbDatabase *db) {
    run_sql(db, "CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT, name VARCHAR)");
    run_sql(db, "INSERT INTO t SELECT value, value * 10, 'n' || value FROM generate_series(1, 1000)");

    struct ArrowArrayStream s;
    CHECK(ldb_sql(db, "SELECT id, v FROM t WHERE id <= 500 ORDER BY id", &s) == LDB_OK);
    struct ArrowSchema schema;
    CHECK(s.get_schema(&s, &schema) == 0);
    CHECK(strcmp(schema.format, "+s") == 0 && schema.n_children == 2);
    CHECK(strcmp(schema.children[0]->format, "l") == 0);
    CHECK(strcmp(schema.children[0]->name, "id") == 0);
    schema.release(&schema);
    int64_t rows = 0, sum = 0, last = 0;
    int ordered = 1;
    for (;;) {
        struct ArrowArray a;
        CHECK(s.get_next(&s, &a) == 0);
        if (a.release == NULL) break; /* end of stream */
        struct ArrowArray *id = a.children[0], *v = a.children[1];
        const int64_t *ids = (const int64_t *)id->buffers[1] + id->offset;
        const int64_t *vs = (const int64_t *)v->buffers[1] + v->offset;
        for (int64_t i = 0; i < a.length; i++) {
            if (ids[i] <= last) ordered = 0;
            last = ids[i];
            sum += vs[i];
        }
        rows += a.length;
        a.release(&a);
    }
    s.release(&s);
    CHECK(rows == 500);
    CHECK(ordered);
    CHECK(sum == 10 * (500 * 501 / 2));

    /* Bad SQL: a typed error and a message; `out` untouched. */
    struct ArrowArrayStream bad;
    memset(&bad, 0, sizeof bad);
    CHECK(ldb_sql(db, "SELEC nonsense", &bad) == LDB_ERR_SQL);
    CHECK(strlen(ldb_last_error_message()) > 0);
    CHECK(bad.release == NULL);
    CHECK(ldb_sql(db, "SELECT * FROM no_such_table", &bad) < 0);
    CHECK(ldb_sql(db, NULL, &bad) == LDB_ERR_NULL_ARGUMENT);
    CHECK(ldb_sql(db, "SELECT 1", NULL) == LDB_ERR_NULL_ARGUMENT);
}

int main(void) {
    char dir[] = "/tmp/ldb-c-test-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 2;
    }
    char path[256];
    snprintf(path, sizeof path, "%s/db", dir);

    test_null_arguments();

    LdbDatabase *db = NULL;
    CHECK(ldb_open(path, LDB_OPEN_EXISTING, &db) == LDB_ERR_DATABASE_NOT_FOUND);
    CHECK(ldb_open(path, 42, &db) == LDB_ERR_INVALID_ARGUMENT);
    CHECK(ldb_open(path, LDB_OPEN_CREATE, &db) == LDB_OK);
    LdbDatabase *second = NULL;
    CHECK(ldb_open(path, LDB_OPEN_OR_CREATE, &second) == LDB_ERR_LOCKED);

    test_kv(db);
    test_batch_and_scan(db);
    test_transactions(db);
    test_sql(db);

    /* An iterator outliving its database's close fails cleanly, and is still freed. */
    LdbIterator *it = NULL;
    CHECK(ldb_scan(db, NULL, 0, NULL, 0, &it) == LDB_OK);
    CHECK(ldb_close(db) == LDB_OK);
    ldb_iterator_free(it);

    /* Reopen: everything committed is there. */
    CHECK(ldb_open(path, LDB_OPEN_EXISTING, &db) == LDB_OK);
    uint8_t *v = NULL;
    size_t vlen = 0;
    CHECK(ldb_get(db, KEY("t1"), &v, &vlen) == LDB_OK && vlen == 1 && v[0] == 'a');
    ldb_free_bytes(v, vlen);
    CHECK(ldb_close(db) == LDB_OK);

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);

    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("C API tests passed\n");
    return 0;
}
