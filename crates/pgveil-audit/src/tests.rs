use super::*;

fn fields(i: u64) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("kind".into(), Value::from("select"));
    m.insert("rows".into(), Value::from(i));
    m
}

/// Two segments of 10 records each (a checkpoint closing each) and HEAD.
fn log(key: &SigningKey) -> (Vec<(String, Vec<u8>)>, Vec<u8>) {
    let mut chain = Chain::default();
    let mut segs = Vec::new();
    let mut head = Vec::new();
    for s in 0..2 {
        let name = segment_name(chain.last_seq + 1);
        let mut data = Vec::new();
        for i in 0..9 {
            data.extend_from_slice(
                chain
                    .append("t", "statement", fields(s * 10 + i))
                    .as_bytes(),
            );
            data.push(b'\n');
        }
        let cp = chain.checkpoint("t", key);
        data.extend_from_slice(cp.as_bytes());
        data.push(b'\n');
        head = cp.into_bytes();
        segs.push((name, data));
    }
    (segs, head)
}

fn run(segs: &[(String, Vec<u8>)], head: Option<&[u8]>, key: &VerifyingKey) -> Report {
    let v: Vec<Segment<'_>> = segs
        .iter()
        .map(|(n, d)| Segment { name: n, data: d })
        .collect();
    verify(&v, head, key)
}

fn lines(d: &[u8]) -> Vec<Vec<u8>> {
    d.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn join(ls: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in ls {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    out
}

#[test]
fn untouched_log_verifies() {
    let (_, key) = SigningKey::generate().unwrap();
    let (segs, head) = log(&key);
    let r = run(&segs, Some(&head), &key.verifying_key());
    assert!(r.ok(), "{:#?}", r.problems);
    assert_eq!(
        (r.first_seq, r.last_seq, r.records),
        (Some(1), Some(20), 20)
    );
    assert_eq!(
        (r.checkpoints, r.signed_through, r.unsigned_tail),
        (2, Some(20), 0)
    );
}

#[test]
fn every_tamper_is_found_with_its_position() {
    let (text, key) = SigningKey::generate().unwrap();
    let vk = key.verifying_key();
    assert_eq!(SigningKey::from_text(&text).unwrap().verifying_key(), vk);
    assert_eq!(VerifyingKey::from_text(&vk.to_text()).unwrap(), vk);
    let (segs, head) = log(&key);
    let first = |r: &Report| {
        r.problems
            .first()
            .map(|p| p.to_string())
            .unwrap_or_default()
    };

    // One byte edited in record 4 (a digit of its `rows`): record 5 breaks.
    let mut t = segs.clone();
    let at = t[0].1.windows(8).position(|w| w == b"\"rows\":3").unwrap() + 7;
    t[0].1[at] = b'7';
    let r = run(&t, Some(&head), &vk);
    assert!(
        first(&r).contains(":5 (seq 5): does not follow"),
        "{}",
        first(&r)
    );

    // One record deleted.
    let mut t = segs.clone();
    let mut ls = lines(&t[0].1);
    ls.remove(2);
    t[0].1 = join(&ls);
    let r = run(&t, Some(&head), &vk);
    assert!(
        first(&r).contains(":3 (seq 4): seq 4 follows seq 2"),
        "{}",
        first(&r)
    );

    // One inserted (a forged record with a plausible seq).
    let mut t = segs.clone();
    let mut ls = lines(&t[0].1);
    ls.insert(
        3,
        br#"{"seq":4,"prev":"00","type":"statement","time":"t"}"#.to_vec(),
    );
    t[0].1 = join(&ls);
    let r = run(&t, Some(&head), &vk);
    assert!(
        first(&r).contains(":4 (seq 4): does not follow"),
        "{}",
        first(&r)
    );
    assert!(r.problems.iter().any(|p| p.line == 5), "{:#?}", r.problems);

    // Two swapped.
    let mut t = segs.clone();
    let mut ls = lines(&t[1].1);
    ls.swap(1, 2);
    t[1].1 = join(&ls);
    let r = run(&t, Some(&head), &vk);
    assert!(
        first(&r).contains("audit-00000000000000000011.jsonl:2 (seq 13): seq 13 follows seq 11"),
        "{}",
        first(&r)
    );

    // Tail truncated at a record boundary: HEAD's checkpoint is gone.
    let mut t = segs.clone();
    let ls = lines(&t[1].1);
    t[1].1 = join(&ls[..6]);
    let r = run(&t, Some(&head), &vk);
    assert_eq!(r.problems.len(), 1, "{:#?}", r.problems);
    assert!(
        first(&r).contains("HEAD (seq 20): the log was truncated: HEAD's checkpoint is seq 20, the log ends at seq 16"),
        "{}",
        first(&r)
    );
    // … or in the middle of a record.
    let mut t = segs.clone();
    let n = t[1].1.len();
    t[1].1.truncate(n - 30);
    let r = run(&t, Some(&head), &vk);
    assert!(
        first(&r).contains(":10: the last record is cut short"),
        "{}",
        first(&r)
    );

    // A segment removed: the last one (HEAD), the first one (no retention
    // record explains it).
    let r = run(&segs[..1], Some(&head), &vk);
    assert!(first(&r).contains("the log was truncated"), "{}", first(&r));
    let r = run(&segs[1..], Some(&head), &vk);
    assert!(
        first(&r).contains("the log starts at seq 11, and no retention record"),
        "{}",
        first(&r)
    );

    // HEAD removed, or signed by another key.
    let r = run(&segs, None, &vk);
    assert!(first(&r).contains("HEAD is missing"), "{}", first(&r));
    let (_, other) = SigningKey::generate().unwrap();
    let r = run(&segs, Some(&head), &other.verifying_key());
    assert!(
        first(&r).contains("signature does not verify"),
        "{}",
        first(&r)
    );
}

#[test]
fn retention_explains_a_later_start_and_resume_continues() {
    let (_, key) = SigningKey::generate().unwrap();
    let (mut segs, _) = log(&key);
    let ls = lines(&segs[0].1);
    let last_deleted = ls.last().unwrap().clone();
    let mut chain = Chain::resume(lines(&segs[1].1).last().unwrap()).unwrap();
    assert_eq!(chain.last_seq, 20);
    let mut f = Map::new();
    f.insert("deleted_through_seq".into(), Value::from(10));
    f.insert(
        "deleted_last_hash".into(),
        Value::from(line_hash(&last_deleted)),
    );
    let mut more = chain.append("t", "retention", f).into_bytes();
    more.push(b'\n');
    let cp = chain.checkpoint("t", &key);
    more.extend_from_slice(cp.as_bytes());
    more.push(b'\n');
    segs[1].1.extend_from_slice(&more);
    segs.remove(0);
    let r = run(&segs, Some(cp.as_bytes()), &key.verifying_key());
    assert!(r.ok(), "{:#?}", r.problems);
    assert_eq!(r.first_seq, Some(11));
    assert_eq!(r.last_seq, Some(22));
}

#[test]
fn raw_records_are_json_and_chain_like_the_others() {
    let mut chain = Chain::default();
    let mut body = String::from("\"who\":");
    json_str(&mut body, "a \"quoted\"\\ name\n\u{1}é");
    let line = chain.append_raw("t", "statement", &body);
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["who"], "a \"quoted\"\\ name\n\u{1}é");
    assert_eq!(
        (v["seq"].as_u64(), v["prev"].as_str()),
        (Some(1), Some(GENESIS))
    );
    let second = chain.append("t", "statement", fields(2));
    let v: Value = serde_json::from_str(&second).unwrap();
    assert_eq!(v["prev"], line_hash(line.as_bytes()));
}
