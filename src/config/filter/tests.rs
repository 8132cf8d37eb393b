use super::*;

const ACCEPTED: &[&str] = &[
    "status = 'resolved'",
    "kind IN ('a','b') AND NOT archived",
    "deleted_at IS NOT NULL",
    "coalesce(x, 0) > 3",
    "EXISTS (SELECT 1 FROM other o WHERE o.id = t.id)",
    "\"MixedCase\" = 'x'",
    "payload->>'k' = 'v'",
    "tags @> ARRAY['x']",
    "created_at < now() - interval '1 day'",
    // Look-alikes inside strings and quoted names are data, not syntax.
    "note = 'a;b'",
    "note = 'a -- b'",
    "note = '/* not a comment */'",
    "note = 'it''s'",
    "\"odd;name\" = 1",
    // Standard strings: a backslash is an ordinary character.
    "path = 'C:\\'",
    "x::int > 3 AND y BETWEEN 1 AND 2",
    "id IN (SELECT id FROM a UNION SELECT id FROM b)",
    "status = ANY(ARRAY['a', 'b'])",
    "public.lower(name) LIKE 'x%'",
    "true",
    "(a = 1) OR (b = 2)",
    "lower_bound(x) > 0",
    "long_value > 0",
    "payload ? 'k' AND payload ?| ARRAY['a']",
    "note = $$a;b -- c$$",
    "note = $q$it's$q$",
    "note = E'it\\'s'",
];

#[test]
fn an_operator_that_hides_a_comment_is_refused() {
    // sqlparser reads `%--` as one operator; PostgreSQL reads `%` and a comment, and
    // the next line then leaves the parentheses.
    refused("id %--'\n1 = 0) OR (true OR 0 %--'\n-1 = 0", "comment");
    refused("id @/* x */ 1", "comment");
    refused("a |-- b", "comment");
    assert!(check_filter("note = 'a -- b /* c */'").is_ok());
    assert!(check_filter("\"odd--name\" = 1").is_ok());
    assert!(check_filter("x - -1 = 0").is_ok());
}

#[test]
fn legit_filters_are_accepted() {
    for f in ACCEPTED {
        assert_eq!(check_filter(f), Ok(()), "{f}");
    }
}

#[track_caller]
fn refused(filter: &str, words: &str) {
    match check_filter(filter) {
        Ok(()) => panic!("`{filter}` was accepted"),
        Err(m) => assert!(m.contains(words), "`{filter}`: `{m}` lacks `{words}`"),
    }
}

#[test]
fn breaking_out_of_the_parentheses_is_refused() {
    refused(
        "status='resolved') OR (true",
        "the filter must be one SQL boolean expression; found `)` after `status='resolved'`",
    );
    refused("a = 1)", "found `)` after `a = 1`");
    refused("(a = 1", "not one SQL boolean expression");
    refused("a = 1 b = 2", "found `b` after `a = 1`");
    refused("a = 'unterminated", "not valid SQL");
    refused("\"unterminated = 1", "not valid SQL");
}

#[test]
fn statements_and_comments_are_refused() {
    refused("a = 1; DELETE FROM x", "`;` is not allowed");
    refused("a = 1;", "`;` is not allowed");
    refused("a = 1 -- c", "comments are not allowed");
    refused("a = 1 /* c */", "comments are not allowed");
    refused("a = 1 /* unterminated", "not valid SQL");
    // The backslash does not escape the quote, so the comment is real.
    refused("path = 'C:\\' OR (true --'", "comments are not allowed");
}

#[test]
fn writing_functions_are_refused() {
    for f in [
        "id = nextval('s')",
        "setval('s', 1) > 0",
        "set_config('x', 'y', false) = 'y'",
        "pg_advisory_lock(1) IS NULL",
        "pg_advisory_xact_lock(1) IS NULL",
        "pg_try_advisory_lock(1)",
        "pg_terminate_backend(42)",
        "pg_cancel_backend(42)",
        "pg_reload_conf()",
        "pg_rotate_logfile()",
        "lo_unlink(1) = 1",
        "lo_import('/etc/passwd') > 0",
        "dblink_exec('x', 'DELETE FROM y') = 'ok'",
        "dblink('x', 'y') IS NULL",
        "pg_sleep(10) IS NULL",
        "pg_sleep_for('1 hour') IS NULL",
        "PG_CATALOG.NEXTVAL('s') > 0",
        "coalesce(x, nextval('s')) > 0",
        "EXISTS (SELECT 1 FROM other WHERE pg_sleep(1) IS NULL)",
        "EXISTS (SELECT 1 FROM pg_sleep(1))",
    ] {
        refused(f, "a filter may only read");
    }
}

#[test]
fn subqueries_must_be_plain_selects() {
    refused(
        "EXISTS (SELECT 1 FROM other FOR UPDATE)",
        "must be a plain SELECT",
    );
    refused(
        "id IN (SELECT id FROM other FOR SHARE SKIP LOCKED)",
        "must be a plain SELECT",
    );
    refused(
        "EXISTS (SELECT 1 INTO newtable FROM other)",
        "must be a plain SELECT",
    );
    refused(
        "id IN (WITH d AS (DELETE FROM other RETURNING id) SELECT id FROM d)",
        "must be a plain SELECT",
    );
}

#[test]
fn other_mistakes() {
    refused("", "must not be empty");
    refused("   ", "must not be empty");
    refused("created_at < $1", "parameters");
    refused("1", "not a boolean expression");
    refused("'yes'", "not a boolean expression");
    refused(
        &format!("{}1{}", "(".repeat(200), ")".repeat(200)),
        "nested too deeply",
    );
}

#[test]
fn offsets_of_locations() {
    let text = "ab\ncdé f";
    let at = |line, column| char_offset(text, Location { line, column });
    assert_eq!(at(1, 1), Some(0));
    assert_eq!(at(2, 1), Some(3));
    assert_eq!(at(2, 5), Some(text.find('f').unwrap()));
    assert_eq!(at(0, 0), None);
}
