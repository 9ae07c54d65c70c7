//! One suite for the storage seam, run against SQLite and PostgreSQL alike.

mod common;

use common::{a_post, a_session, new_message};

use std::sync::Arc;

use postchat::domain::{
    ClientMessageId, Message, MessageId, MessageStatus, Parent, Platform, PostId, Preferences, SessionId,
    SocialPost, TokenUsage, UserId,
};
use postchat::store::{BatchedMessages, FinishedAnswer, Store, StoreError};

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

async fn posts_round_trip_with_their_expanded_content(store: Arc<dyn Store>) {
    let post = a_post(&store, &user("alice")).await;
    assert_eq!(store.get_post(post.id).await.unwrap(), Some(post));
    assert_eq!(store.get_post(PostId::new()).await.unwrap(), None);
}

async fn sessions_round_trip_and_list_newest_first(store: Arc<dyn Store>) {
    let alice = user("alice");
    let first = a_session(&store, &alice).await;
    let second = a_session(&store, &alice).await;
    a_session(&store, &user("bob")).await;
    assert_eq!(store.get_session(first.id).await.unwrap(), Some(first.clone()));
    let listed: Vec<SessionId> = store.list_sessions(&alice).await.unwrap().iter().map(|s| s.id).collect();
    assert_eq!(listed, vec![second.id, first.id]);
}

async fn deleting_a_session_deletes_its_messages(store: Arc<dyn Store>) {
    let session = a_session(&store, &user("alice")).await;
    store.insert_message(&new_message(session.id, "hi", None)).await.unwrap();
    assert!(store.delete_session(session.id).await.unwrap());
    assert_eq!(store.get_session(session.id).await.unwrap(), None);
    assert!(store.branch_messages(session.id, 10, None).await.unwrap().is_empty());
    assert!(!store.delete_session(session.id).await.unwrap());
}

async fn a_message_is_stored_streaming_then_finished(store: Arc<dyn Store>) {
    let session = a_session(&store, &user("alice")).await;
    let msg = new_message(session.id, "What? {x}", Some("k1"));
    store.insert_message(&msg).await.unwrap();
    let stored = store.branch_messages(session.id, 10, None).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].status, MessageStatus::Streaming);
    assert_eq!(stored[0].ai_response, "");
    assert_eq!(stored[0].usage, None);

    let posts = vec![SocialPost::fitted(Platform::Twitter, "A post 😀", vec!["#a".into()])];
    store
        .finish_message(
            msg.id,
            FinishedAnswer {
                ai_response: "Answer.",
                posts: &posts,
                status: MessageStatus::Complete,
                usage: Some(TokenUsage::reported(120, 7)),
                cut: true,
            },
        )
        .await
        .unwrap();
    let done = &store.branch_messages(session.id, 10, None).await.unwrap()[0];
    assert_eq!(done.status, MessageStatus::Complete);
    assert_eq!(done.ai_response, "Answer.");
    assert_eq!(done.posts, posts);
    assert_eq!(done.usage, Some(TokenUsage::reported(120, 7)));
    assert!(done.cut, "an answer cut at ANSWER_MAX_TOKENS is marked");
    assert_eq!(done.user_message, "What? {x}");
    assert_eq!(done.client_message_id.as_ref().map(|c| c.as_str()), Some("k1"));
}

async fn branch_messages_are_oldest_first_limited_and_page_backwards(store: Arc<dyn Store>) {
    let session = a_session(&store, &user("alice")).await;
    let mut ids = vec![];
    for i in 0..5 {
        let m = new_message(session.id, &format!("m{i}"), None);
        ids.push(m.id);
        store.insert_message(&m).await.unwrap();
    }
    let last3: Vec<MessageId> =
        store.branch_messages(session.id, 3, None).await.unwrap().iter().map(|m| m.id).collect();
    assert_eq!(last3, ids[2..]);
    let before: Vec<MessageId> =
        store.branch_messages(session.id, 10, Some(ids[2])).await.unwrap().iter().map(|m| m.id).collect();
    assert_eq!(before, ids[..2]);
}

async fn a_client_message_id_is_unique_per_session(store: Arc<dyn Store>) {
    let session = a_session(&store, &user("alice")).await;
    let other = a_session(&store, &user("alice")).await;
    store.insert_message(&new_message(session.id, "a", Some("key"))).await.unwrap();
    let again = store.insert_message(&new_message(session.id, "a", Some("key"))).await;
    assert!(matches!(again, Err(StoreError::Duplicate(_))), "{again:?}");
    store.insert_message(&new_message(other.id, "a", Some("key"))).await.unwrap();
    // Messages without a key never collide.
    store.insert_message(&new_message(session.id, "b", None)).await.unwrap();
    store.insert_message(&new_message(session.id, "c", None)).await.unwrap();
    let found = store
        .find_message_by_client_id(session.id, &ClientMessageId::parse("key").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.user_message, "a");
}

async fn streaming_messages_become_interrupted_at_start(store: Arc<dyn Store>) {
    let session = a_session(&store, &user("alice")).await;
    let done = new_message(session.id, "done", None);
    store.insert_message(&done).await.unwrap();
    store
        .finish_message(
            done.id,
            FinishedAnswer {
                ai_response: "x",
                posts: &[],
                status: MessageStatus::Complete,
                usage: None,
                cut: false,
            },
        )
        .await
        .unwrap();
    store.insert_message(&new_message(session.id, "lost", None)).await.unwrap();
    let statuses = |store: Arc<dyn Store>| async move {
        let messages = store.branch_messages(session.id, 10, None).await.unwrap();
        messages.iter().map(|m| m.status).collect::<Vec<MessageStatus>>()
    };
    // Cluster mode interrupts only what is older than any answer can last.
    store.interrupt_streaming(postchat::domain::now() - chrono::Duration::hours(1)).await.unwrap();
    assert_eq!(statuses(store.clone()).await, vec![MessageStatus::Complete, MessageStatus::Streaming]);
    let later = postchat::domain::now() + chrono::Duration::seconds(1);
    assert!(store.interrupt_streaming(later).await.unwrap() >= 1);
    assert_eq!(statuses(store.clone()).await, vec![MessageStatus::Complete, MessageStatus::Interrupted]);
}

async fn one_streaming_message_is_interrupted_with_its_text_unless_it_ended(store: Arc<dyn Store>) {
    let session = a_session(&store, &user("bob")).await;
    let lost = new_message(session.id, "lost", None);
    store.insert_message(&lost).await.unwrap();
    assert!(store.interrupt_message(lost.id, "half an ans").await.unwrap());
    let message = store.branch_messages(session.id, 1, None).await.unwrap().remove(0);
    assert_eq!((message.status, message.ai_response.as_str()), (MessageStatus::Interrupted, "half an ans"));
    assert!(!store.interrupt_message(lost.id, "again").await.unwrap(), "only a streaming answer is swept");
}

/// A process paused past its lease comes back and finishes the answer it was generating; the
/// sweep stored it interrupted meanwhile, and that outcome (what every socket was told) stays,
/// one at a time and in a batch.
async fn an_answer_swept_as_interrupted_is_not_finished_over(store: Arc<dyn Store>) {
    let session = a_session(&store, &user("carol")).await;
    let (one, two) = (new_message(session.id, "one", None), new_message(session.id, "two", None));
    store.insert_message(&one).await.unwrap();
    store.insert_message(&two).await.unwrap();
    assert!(store.interrupt_message(one.id, "swept").await.unwrap());
    assert!(store.interrupt_message(two.id, "swept too").await.unwrap());
    let late = FinishedAnswer {
        ai_response: "the whole answer, too late",
        posts: &[],
        status: MessageStatus::Complete,
        usage: None,
        cut: false,
    };
    assert!(!store.finish_message(one.id, late.clone()).await.unwrap(), "not stored: it had ended");
    let three = new_message(session.id, "three", None);
    store.insert_message(&three).await.unwrap();
    let stored = store.finish_messages(&[(two.id, late.clone()), (three.id, late)]).await.unwrap();
    assert_eq!(stored, vec![three.id], "of a batch, only the one still streaming");
    let stored = store.branch_messages(session.id, 10, None).await.unwrap();
    let outcomes: Vec<(MessageStatus, &str)> =
        stored.iter().map(|m| (m.status, m.ai_response.as_str())).collect();
    assert_eq!(
        outcomes,
        vec![
            (MessageStatus::Interrupted, "swept"),
            (MessageStatus::Interrupted, "swept too"),
            (MessageStatus::Complete, "the whole answer, too late")
        ]
    );
}

/// Another process continues an answer whose process died, under a fencing token: from then on
/// only its end under that token is stored, one at a time and in a batch; a later takeover
/// fences that one off in turn; an earlier token never takes it back.
async fn an_answer_taken_over_is_finished_only_under_its_token(store: Arc<dyn Store>) {
    let session = a_session(&store, &user("dora")).await;
    let (one, two) = (new_message(session.id, "one", None), new_message(session.id, "two", None));
    store.insert_message(&one).await.unwrap();
    store.insert_message(&two).await.unwrap();
    assert_eq!(store.message_fence(one.id).await.unwrap(), Some(0), "its first process's");
    assert!(store.take_over_message(one.id, 5).await.unwrap());
    assert_eq!(store.message_fence(one.id).await.unwrap(), Some(5));
    assert_eq!(store.message_fence(MessageId::new()).await.unwrap(), None, "a missing exchange");
    assert!(store.take_over_message(two.id, 5).await.unwrap());
    let end = |text| FinishedAnswer {
        ai_response: text,
        posts: &[],
        status: MessageStatus::Complete,
        usage: None,
        cut: false,
    };
    assert!(!store.finish_message(one.id, end("by its paused first process")).await.unwrap());
    let batched = store.finish_messages(&[(two.id, end("by its paused first process"))]).await.unwrap();
    assert!(batched.is_empty(), "a batch finishes no answer taken over");
    assert!(!store.take_over_message(one.id, 4).await.unwrap(), "an earlier token takes nothing back");
    assert!(store.take_over_message(one.id, 7).await.unwrap());
    assert_eq!(store.message_fence(one.id).await.unwrap(), Some(7));
    assert!(!store.finish_taken_over(one.id, 5, end("by the first to continue it")).await.unwrap());
    assert!(store.finish_taken_over(one.id, 7, end("by the second")).await.unwrap());
    assert!(store.finish_taken_over(two.id, 5, end("continued")).await.unwrap());
    assert!(!store.take_over_message(two.id, 9).await.unwrap(), "an ended answer is not taken over");
    let stored = store.branch_messages(session.id, 10, None).await.unwrap();
    let texts: Vec<&str> = stored.iter().map(|m| m.ai_response.as_str()).collect();
    assert_eq!(texts, ["by the second", "continued"]);
}

async fn preferences_are_upserted_per_user(store: Arc<dyn Store>) {
    let alice = user("alice");
    assert_eq!(store.get_preferences(&alice).await.unwrap(), None);
    let mut prefs = Preferences::default();
    store.put_preferences(&alice, &prefs).await.unwrap();
    prefs.voice = "casual".into();
    prefs.platforms = vec![Platform::Bluesky, Platform::Mastodon];
    prefs.emoji = true;
    store.put_preferences(&alice, &prefs).await.unwrap();
    assert_eq!(store.get_preferences(&alice).await.unwrap(), Some(prefs));
    assert_eq!(store.get_preferences(&user("bob")).await.unwrap(), None);
}

async fn the_session_summary_is_updated(store: Arc<dyn Store>) {
    let session = a_session(&store, &user("alice")).await;
    let at = postchat::domain::now();
    let through = MessageId::new();
    store.update_session_summary(session.id, "They asked about X.", at, Some(through)).await.unwrap();
    let read = store.get_session(session.id).await.unwrap().unwrap();
    assert_eq!(read.summary, "They asked about X.");
    assert_eq!(read.last_summary_at, Some(at));
    assert_eq!(read.summary_through, Some(through));
    store.clear_session_summary(session.id).await.unwrap();
    let read = store.get_session(session.id).await.unwrap().unwrap();
    assert_eq!((read.summary.as_str(), read.last_summary_at, read.summary_through), ("", None, None));
}

async fn tokens_used_today_add_up_per_user(store: Arc<dyn Store>) {
    let alice = user("alice");
    let session = a_session(&store, &alice).await;
    let other = a_session(&store, &user("bob")).await;
    let since = postchat::domain::now();
    for (s, usage) in [
        (session.id, Some(TokenUsage::reported(100, 20))),
        (session.id, None),
        (other.id, Some(TokenUsage::estimated(7, 3))),
    ] {
        let m = new_message(s, "q", None);
        store.insert_message(&m).await.unwrap();
        store
            .finish_message(
                m.id,
                FinishedAnswer {
                    ai_response: "a",
                    posts: &[],
                    status: MessageStatus::Complete,
                    usage,
                    cut: false,
                },
            )
            .await
            .unwrap();
    }
    assert_eq!(store.tokens_used_since(&alice, since).await.unwrap(), 120);
    assert_eq!(store.tokens_used_since(&user("bob"), since).await.unwrap(), 10);
    let later = since + chrono::Duration::hours(1);
    assert_eq!(store.tokens_used_since(&alice, later).await.unwrap(), 0);

    // Deleting the session does not give the tokens back (the budget is read after a restart).
    assert!(store.delete_session(session.id).await.unwrap());
    assert_eq!(store.tokens_used_since(&alice, since).await.unwrap(), 120);
    assert_eq!(store.tokens_used_since(&alice, later).await.unwrap(), 0);
    assert_eq!(store.tokens_used_since(&user("bob"), since).await.unwrap(), 10);
    assert!(store.delete_session(other.id).await.unwrap());
    assert_eq!(store.tokens_used_since(&user("bob"), since).await.unwrap(), 10);
}

async fn the_session_title_is_updated(store: Arc<dyn Store>) {
    let session = a_session(&store, &user("alice")).await;
    let at = postchat::domain::now();
    store.update_session_title(session.id, "Tokio and idle connections", at).await.unwrap();
    let read = store.get_session(session.id).await.unwrap().unwrap();
    assert_eq!(read.title, "Tokio and idle connections");
    assert_eq!(read.updated_at, at);
}

async fn batches_of_messages_are_inserted_and_finished_in_one_statement(store: Arc<dyn Store>) {
    let (a, b) = (a_session(&store, &user("alice")).await, a_session(&store, &user("bob")).await);
    store.insert_message(&new_message(a.id, "first", Some("taken"))).await.unwrap();
    let batch = vec![
        new_message(a.id, "one {x}", Some("k1")),
        new_message(a.id, "again", Some("taken")),
        new_message(b.id, "two", None),
        new_message(b.id, "three ünï", Some("k1")),
    ];
    let stored = store.insert_messages(&batch).await.unwrap();
    assert_eq!(stored, vec![true, false, true, true], "the taken key is skipped, not an error");

    let posts = vec![SocialPost::fitted(Platform::Linkedin, "Post", vec![])];
    let ends = vec![
        (
            batch[0].id,
            FinishedAnswer {
                ai_response: "Answer {y}.",
                posts: &[],
                status: MessageStatus::Complete,
                usage: Some(TokenUsage::reported(10, 2)),
                cut: true,
            },
        ),
        (
            batch[3].id,
            FinishedAnswer {
                ai_response: "Posts",
                posts: &posts,
                status: MessageStatus::Stopped,
                usage: None,
                cut: false,
            },
        ),
    ];
    store.finish_messages(&ends).await.unwrap();
    let in_a = store.branch_messages(a.id, 10, None).await.unwrap();
    assert_eq!(in_a.iter().map(|m| m.user_message.as_str()).collect::<Vec<_>>(), ["first", "one {x}"]);
    assert_eq!(in_a[1].ai_response, "Answer {y}.");
    assert_eq!(in_a[1].status, MessageStatus::Complete);
    assert_eq!(in_a[1].usage, Some(TokenUsage::reported(10, 2)));
    assert!(in_a[1].cut);
    // Two of one session in one batch follow the same exchange (in use a session has one
    // answer at a time): the tree holds both.
    let in_b = store.all_messages(b.id).await.unwrap();
    let three = in_b.iter().find(|m| m.id == batch[3].id).unwrap();
    assert_eq!(
        (three.status, three.posts.clone(), three.usage, three.cut),
        (MessageStatus::Stopped, posts, None, false)
    );
    let two = in_b.iter().find(|m| m.id == batch[2].id).unwrap();
    assert_eq!(two.status, MessageStatus::Streaming, "not in the finished batch: untouched");
}

async fn path_exchanges_of_several_answers_come_in_one_statement(store: Arc<dyn Store>) {
    let owner = user("alice");
    let (a, b) = (a_session(&store, &owner).await, a_session(&store, &owner).await);
    let mut newest = Vec::new();
    for n in 0..5 {
        let message = new_message(a.id, &format!("a{n}"), None);
        store.insert_message(&message).await.unwrap();
        newest.push(message.id);
    }
    for n in 0..2 {
        let message = new_message(b.id, &format!("b{n}"), None);
        store.insert_message(&message).await.unwrap();
        let answer = format!("answer {n}");
        let finished = FinishedAnswer {
            ai_response: &answer,
            posts: &[],
            status: MessageStatus::Complete,
            usage: None,
            cut: false,
        };
        store.finish_message(message.id, finished).await.unwrap();
        newest.push(message.id);
    }
    let (last_a, last_b) = (newest[4], newest[6]);
    let rows = store.path_exchanges(&[last_a, last_b], 3).await.unwrap();
    for (start, session) in [(last_a, a.id), (last_b, b.id)] {
        let of: Vec<_> = rows.iter().filter(|(s, _)| *s == start).map(|(_, e)| e.clone()).collect();
        let alone = store.branch_messages(session, 3, None).await.unwrap();
        assert_eq!(
            of.iter().map(|e| (e.id, &e.user_message, &e.ai_response, e.created_at)).collect::<Vec<_>>(),
            alone.iter().map(|m| (m.id, &m.user_message, &m.ai_response, m.created_at)).collect::<Vec<_>>(),
            "the same exchanges, in the same order, as the branch read alone"
        );
        let one = store.path_exchanges(&[start], 3).await.unwrap();
        assert_eq!(one.into_iter().map(|(_, e)| e).collect::<Vec<_>>(), of, "one alone: the same statement");
    }
    assert_eq!(rows.len(), 5);
    assert!(store.path_exchanges(&[MessageId::new()], 3).await.unwrap().is_empty(), "no such exchange");
}

/// A session's exchanges form a tree: a message follows its active branch (the newest
/// exchange's, or the one a client selected since), an edit or a regenerated answer branches
/// from the exchange it names (or the root); a branch is read with each exchange's siblings.
async fn a_session_is_a_tree_of_branches(store: Arc<dyn Store>) {
    let session = a_session(&store, &user("alice")).await;
    let insert = |text: &str, parent: Parent| {
        let mut message = new_message(session.id, text, None);
        message.parent = parent;
        let store = store.clone();
        async move {
            store.insert_message(&message).await.unwrap();
            message.id
        }
    };
    let m0 = insert("m0", Parent::ActiveBranch).await;
    let m1 = insert("m1", Parent::ActiveBranch).await;
    let m2 = insert("m2", Parent::ActiveBranch).await;
    let r1 = insert("m1", Parent::Exchange(m0)).await;
    let m3 = insert("m3", Parent::ActiveBranch).await;
    let branch = |messages: Vec<Message>| -> Vec<(MessageId, Option<MessageId>, u32, u32)> {
        messages
            .iter()
            .map(|m| {
                let s = m.siblings.expect("read with its siblings");
                (m.id, m.parent_id, s.sibling_index, s.sibling_count)
            })
            .collect()
    };
    let active = store.branch_messages(session.id, 10, None).await.unwrap();
    assert_eq!(branch(active), [(m0, None, 0, 1), (r1, Some(m0), 1, 2), (m3, Some(r1), 0, 1)]);
    assert_eq!(store.select_branch(session.id, m1).await.unwrap(), Some(m2));
    let active = store.branch_messages(session.id, 10, None).await.unwrap();
    assert_eq!(branch(active), [(m0, None, 0, 1), (m1, Some(m0), 0, 2), (m2, Some(m1), 0, 1)]);
    let m4 = insert("m4", Parent::ActiveBranch).await;
    let active = store.branch_messages(session.id, 2, None).await.unwrap();
    assert_eq!(branch(active), [(m2, Some(m1), 0, 1), (m4, Some(m2), 0, 1)], "follows the selection");
    let before = store.branch_messages(session.id, 10, Some(m2)).await.unwrap();
    assert_eq!(before.iter().map(|m| m.id).collect::<Vec<_>>(), [m0, m1], "pages back along its branch");
    let e = insert("edited m0", Parent::Root).await;
    let active = store.branch_messages(session.id, 10, None).await.unwrap();
    assert_eq!(branch(active), [(e, None, 1, 2)], "a newer exchange than the selection is active");
    let tree = store.all_messages(session.id).await.unwrap();
    assert_eq!(
        branch(tree),
        [
            (m0, None, 0, 2),
            (m1, Some(m0), 0, 2),
            (m2, Some(m1), 0, 1),
            (r1, Some(m0), 1, 2),
            (m3, Some(r1), 0, 1),
            (m4, Some(m2), 0, 1),
            (e, None, 1, 2)
        ]
    );
    let paths = store.path_exchanges(&[m4, m3], 3).await.unwrap();
    let of = |start| paths.iter().filter(|(s, _)| *s == start).map(|(_, x)| x.id).collect::<Vec<_>>();
    assert_eq!((of(m4), of(m3)), (vec![m1, m2, m4], vec![m0, r1, m3]), "a prompt's history is its branch");
    assert!(store.on_path(m4, m1).await.unwrap() && store.on_path(m4, m4).await.unwrap());
    assert!(!store.on_path(m4, r1).await.unwrap() && !store.on_path(m1, m4).await.unwrap());
    assert_eq!(store.message_session(m1).await.unwrap(), Some(session.id));
    assert_eq!(store.message_session(MessageId::new()).await.unwrap(), None);
    let other = a_session(&store, &user("alice")).await;
    assert_eq!(store.select_branch(other.id, m1).await.unwrap(), None, "another session's exchange");
    assert_eq!(store.select_branch(session.id, MessageId::new()).await.unwrap(), None);
    assert_eq!(store.newest_message(session.id).await.unwrap(), Some(e), "whatever the active branch");
    assert!(store.branch_messages(session.id, 0, None).await.unwrap().is_empty(), "a limit of 0");
    assert!(store.path_exchanges(&[m4], 0).await.unwrap().is_empty(), "a limit of 0");
    // An exchange stamped before a selection and stored after it follows the branch selected,
    // and ends it.
    let late = new_message(session.id, "late", None);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(store.select_branch(session.id, r1).await.unwrap(), Some(m3));
    store.insert_message(&late).await.unwrap();
    let active = store.branch_messages(session.id, 1, None).await.unwrap();
    assert_eq!((active[0].id, active[0].parent_id), (late.id, Some(m3)));
}

async fn a_message_of_a_missing_session_fails_the_batch_statement(store: Arc<dyn Store>) {
    let session = a_session(&store, &user("alice")).await;
    let batch = vec![new_message(session.id, "fine", None), new_message(SessionId::new(), "orphan", None)];
    assert!(store.insert_messages(&batch).await.is_err());
    assert!(store.branch_messages(session.id, 10, None).await.unwrap().is_empty(), "all or nothing");
}

/// `BatchedMessages` under many concurrent answers: every write gets its own outcome, whether it
/// went out alone, in a batch, or one by one after a spoiled batch.
async fn gathered_writes_give_each_answer_its_own_outcome(store: Arc<dyn Store>) {
    let writes = Arc::new(BatchedMessages::new(store.clone(), 2));
    let session = a_session(&store, &user("alice")).await;
    let mut tasks = Vec::new();
    for n in 0..60 {
        let (writes, session_id) = (writes.clone(), session.id);
        tasks.push(tokio::spawn(async move {
            // Every tenth message belongs to no session: its batch fails and is retried row by row.
            let target = if n % 10 == 9 { SessionId::new() } else { session_id };
            let key = format!("k{}", n % 30);
            let message = new_message(target, &format!("m{n}"), Some(&key));
            let inserted = writes.insert(message.clone()).await;
            if inserted.is_ok() {
                let answer = format!("answer {n}");
                let end = FinishedAnswer {
                    ai_response: &answer,
                    posts: &[],
                    status: MessageStatus::Complete,
                    usage: None,
                    cut: false,
                };
                writes.finish(message.id, end).await.unwrap();
            }
            (n, inserted)
        }));
    }
    let (mut stored, mut duplicates) = (0, 0);
    for task in tasks {
        let (n, inserted) = task.await.unwrap();
        match inserted {
            Ok(()) => stored += 1,
            Err(StoreError::Duplicate(_)) => duplicates += 1,
            Err(e) => assert_eq!(n % 10, 9, "message {n}: {e}"),
        }
    }
    // 30 keys, each used twice; 3 of them only by orphans, which always fail.
    assert_eq!((stored, duplicates), (27, 27));
    // Inserted at once, the messages of one batch follow the same exchange (in use one
    // session has one answer at a time): the whole tree holds them all.
    let messages = store.all_messages(session.id).await.unwrap();
    assert_eq!(messages.len(), stored);
    // Reads gathered the same way give each reader the path up from its own exchange.
    let newest = store.branch_messages(session.id, 5, None).await.unwrap();
    let newest: Vec<_> = newest.iter().map(|m| m.id).collect();
    let leaf = *newest.last().unwrap();
    let reads: Vec<_> = (0..20)
        .map(|n| {
            let (writes, from) = (writes.clone(), if n % 2 == 0 { leaf } else { MessageId::new() });
            tokio::spawn(async move { (from, writes.recent(from, 5).await.unwrap()) })
        })
        .collect();
    for read in reads {
        let (from, got) = read.await.unwrap();
        let got: Vec<_> = got.iter().map(|m| m.id).collect();
        if from == leaf {
            assert_eq!(got, newest);
        } else {
            assert!(got.is_empty());
        }
    }
    for m in &messages {
        assert_eq!(m.status, MessageStatus::Complete);
        assert_eq!(m.ai_response, format!("answer {}", &m.user_message[1..]));
    }
}

async fn ping_answers(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
}

on_both_backends!(
    posts_round_trip_with_their_expanded_content,
    sessions_round_trip_and_list_newest_first,
    deleting_a_session_deletes_its_messages,
    a_message_is_stored_streaming_then_finished,
    branch_messages_are_oldest_first_limited_and_page_backwards,
    a_client_message_id_is_unique_per_session,
    streaming_messages_become_interrupted_at_start,
    one_streaming_message_is_interrupted_with_its_text_unless_it_ended,
    an_answer_swept_as_interrupted_is_not_finished_over,
    an_answer_taken_over_is_finished_only_under_its_token,
    preferences_are_upserted_per_user,
    the_session_summary_is_updated,
    tokens_used_today_add_up_per_user,
    the_session_title_is_updated,
    batches_of_messages_are_inserted_and_finished_in_one_statement,
    path_exchanges_of_several_answers_come_in_one_statement,
    a_session_is_a_tree_of_branches,
    a_message_of_a_missing_session_fails_the_batch_statement,
    gathered_writes_give_each_answer_its_own_outcome,
    ping_answers,
);
