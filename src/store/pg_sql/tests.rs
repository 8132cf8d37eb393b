use super::*;

fn ident(s: &str) -> Ident {
    Ident::parse(s).unwrap()
}

#[test]
fn delete_batch_quotes_everything_and_binds_values() {
    let table = TableName::parse("public.ApiLog").unwrap();
    let age = Age::Column(ident("CreatedAt"));
    let subj = ident("account_id");
    let held = vec!["42".to_string()];
    let sel = Selection {
        table: &table,
        age: &age,
        age_kind: AgeKind::Timestamptz,
        cutoff: Some(Utc::now()),
        not_before: None,
        filter: Some("status = 'resolved'"),
        subject_column: Some(&subj),
        subject_type: SubjectType::of("bigint"),
        held_ids: &held,
        only_subject: None,
        anonymise: &[],
        keeps: &[],
        skip: &[],
    };
    let st = sel.delete_batch(&Batch::First(500));
    assert!(st.sql.contains("FROM \"public\".\"ApiLog\""), "{}", st.sql);
    assert!(st.sql.contains("\"CreatedAt\" < $1"));
    assert!(st.sql.contains("(status = 'resolved')"));
    assert!(
        st.sql.contains(
            "AND NOT (\"account_id\" IS NOT NULL AND \"account_id\" = ANY(CAST($2 AS bigint[])))"
        ),
        "{}",
        st.sql
    );
    assert!(st.sql.contains("LIMIT $3 FOR UPDATE SKIP LOCKED"));
    assert_eq!(st.params.0.len(), 3);
    assert_eq!(st.params.0[2], Param::BigInt(500));
}

#[test]
fn page_batches_read_one_range_and_bind_it() {
    let table = TableName::parse("public.logs").unwrap();
    let age = Age::Column(ident("at"));
    let sel = Selection {
        table: &table,
        age: &age,
        age_kind: AgeKind::Timestamptz,
        cutoff: Some(Utc::now()),
        not_before: None,
        filter: None,
        subject_column: None,
        subject_type: SubjectType::default(),
        held_ids: &[],
        only_subject: None,
        anonymise: &[],
        keeps: &[],
        skip: &[],
    };
    let waiting = sel.delete_batch(&Batch::Pages {
        from: 80,
        to: 160,
        skip_locked: false,
    });
    assert_eq!(
        waiting.sql,
        "DELETE FROM \"public\".\"logs\" WHERE ctid >= CAST($1 AS tid) AND ctid < CAST($2 AS tid) AND \"at\" < $3"
    );
    assert_eq!(waiting.params.0[0], Param::Text("(80,0)".into()));
    assert_eq!(waiting.params.0[1], Param::Text("(160,0)".into()));
    let skipping = sel.delete_batch(&Batch::Pages {
        from: 80,
        to: 160,
        skip_locked: true,
    });
    assert!(
        skipping
            .sql
            .ends_with("ctid < CAST($2 AS tid) AND \"at\" < $3 FOR UPDATE SKIP LOCKED))"),
        "{}",
        skipping.sql
    );
}

#[test]
fn another_rules_floor_and_holds_keep_what_it_covers() {
    let table = TableName::parse("public.docs").unwrap();
    let age = Age::Column(ident("created_at"));
    let cutoff = Utc::now();
    let keep = Keep {
        rule: "invoice-docs".into(),
        filter: Some("kind = 'invoice'".into()),
        age: Age::Column(ident("issued_on")),
        age_kind: AgeKind::Date(Tz::UTC),
        floor_from: Some(cutoff),
        subject: Some((
            ident("account_id"),
            SubjectType::of("integer"),
            vec!["8".into()],
        )),
        category_held: false,
    };
    assert!(keep.keeps_anything());
    let keeps = [keep];
    let sel = Selection {
        table: &table,
        age: &age,
        age_kind: AgeKind::Timestamptz,
        cutoff: Some(cutoff),
        not_before: None,
        filter: None,
        subject_column: None,
        subject_type: SubjectType::default(),
        held_ids: &[],
        only_subject: None,
        anonymise: &[],
        keeps: &keeps,
        skip: &[],
    };
    let st = sel.delete_batch(&Batch::First(10));
    assert!(
        st.sql.contains(
            "AND NOT (COALESCE((kind = 'invoice'), false) AND ((\"issued_on\" IS NULL OR \"issued_on\" >= $2) OR (\"account_id\" IS NOT NULL AND \"account_id\" = ANY(CAST($3 AS bigint[])))))"
        ),
        "{}",
        st.sql
    );
    // The count reports the kept rows under the rule that keeps them.
    assert_eq!(sel.kept_rules(), vec!["invoice-docs".to_string()]);
    let count = sel.count(false);
    assert!(
        count.sql.contains(") AS kept, count(*) FILTER"),
        "{}",
        count.sql
    );
    // A rule that keeps nothing now adds nothing.
    let idle = Keep {
        rule: "promo".into(),
        filter: None,
        age: Age::Column(ident("created_at")),
        age_kind: AgeKind::Timestamptz,
        floor_from: None,
        subject: Some((ident("account_id"), SubjectType::Text, vec![])),
        category_held: false,
    };
    assert!(!idle.keeps_anything());
    assert_eq!(
        idle.cond(&mut Params::default(), &TableName::parse("t").unwrap()),
        None
    );
}

#[test]
fn subject_ids_are_compared_in_the_columns_type() {
    let uuid = SubjectType::of("uuid");
    assert_eq!(
        uuid.normalise("0E8F1C2A-3B4D-4E5F-8A9B-0C1D2E3F4A5B")
            .unwrap(),
        "0e8f1c2a-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
    );
    assert!(uuid.normalise("42").is_err());
    let int = SubjectType::of("integer");
    assert_eq!(int.normalise("042").unwrap(), "42");
    assert!(int.normalise("abc").is_err());
    assert!(int.normalise("99999999999").is_err());
    assert_eq!(SubjectType::of("character varying(64)"), SubjectType::Text);
    assert_eq!(SubjectType::of("text").normalise("A-1").unwrap(), "A-1");
    assert_eq!(
        int.normalise_all(&["7".to_string(), "x".into(), "007".into()]),
        vec!["7".to_string()]
    );
}

#[test]
fn age_kinds_bind_the_right_cutoff() {
    use chrono::TimeZone;
    let c = Utc.with_ymd_and_hms(2026, 10, 23, 10, 30, 0).unwrap();
    assert_eq!(
        AgeKind::EpochMillis.cutoff_param(c),
        Param::BigInt(c.timestamp_millis())
    );
    assert_eq!(
        AgeKind::EpochSeconds.cutoff_param(c),
        Param::BigInt(c.timestamp())
    );
    assert_eq!(
        AgeKind::Date(Tz::UTC).cutoff_param(c),
        Param::Date(NaiveDate::from_ymd_opt(2026, 10, 23).unwrap())
    );
    assert!(AgeKind::resolve("bigint", AgeFormat::Native, None).is_err());
    assert!(AgeKind::resolve("text", AgeFormat::Native, None).is_err());
    assert!(AgeKind::resolve("timestamp with time zone", AgeFormat::EpochMillis, None).is_err());
    assert_eq!(
        AgeKind::resolve("integer", AgeFormat::EpochSeconds, None).unwrap(),
        AgeKind::EpochSeconds
    );
}

#[test]
fn anonymise_needs_a_recognisable_column() {
    let cols = vec![(ident("id"), crate::anonymise::Strategy::Random)];
    let err = anonymise_columns(&cols, |_| Some(("uuid".into(), true))).unwrap_err();
    assert!(err.contains("recognisable"));
    let cols = vec![(ident("ip"), crate::anonymise::Strategy::TruncateIp)];
    assert!(anonymise_columns(&cols, |_| Some(("inet".into(), true))).is_ok());
}

#[test]
fn an_event_age_is_its_subjects_latest_event_and_null_until_it_happened() {
    let table = TableName::parse("public.generations").unwrap();
    let age = Age::Event(Box::new(crate::config::EventAge {
        event: "account_closed".into(),
        table: TableName::parse("public.accounts").unwrap(),
        key: ident("id"),
        subject: ident("account_id"),
        at: ident("closed_at"),
        description: "account closure".into(),
    }));
    let subj = ident("account_id");
    let sel = Selection {
        table: &table,
        age: &age,
        age_kind: AgeKind::Timestamptz,
        cutoff: Some(Utc::now()),
        not_before: None,
        filter: None,
        subject_column: Some(&subj),
        subject_type: SubjectType::of("bigint"),
        held_ids: &[],
        only_subject: None,
        anonymise: &[],
        keeps: &[],
        skip: &[],
    };
    let st = sel.delete_batch(&Batch::First(10));
    // Due: the subject has an event before the cutoff and none unhappened or later,
    // looked up by the event's subject column; the event table aliased so that its
    // same-named columns never stand in for the row's, the row's subject column
    // qualified by its own table.
    let ev = "FROM \"public\".\"accounts\" AS retentiond_event WHERE retentiond_event.\"id\" = \"public\".\"generations\".\"account_id\"";
    assert!(
        st.sql.contains(&format!(
            "EXISTS (SELECT 1 {ev} AND retentiond_event.\"closed_at\" < $1) AND NOT EXISTS (SELECT 1 {ev} \
             AND (retentiond_event.\"closed_at\" IS NULL OR retentiond_event.\"closed_at\" >= $1))"
        )),
        "{}",
        st.sql
    );
    // The age itself (oldest, floors of other rules): the latest event, NULL until then.
    assert_eq!(
        age_sql(&age, &table),
        "(SELECT CASE WHEN bool_or(retentiond_event.\"closed_at\" IS NULL) THEN NULL ELSE max(retentiond_event.\"closed_at\") END \
         FROM \"public\".\"accounts\" AS retentiond_event WHERE retentiond_event.\"id\" = \"public\".\"generations\".\"account_id\")"
    );
    assert!(matches!(st.params.0[0], Param::Timestamptz(_)));
}
