//! The admin page in a real headless browser (Debian's chromium, driven through chromedriver
//! over WebDriver): log in, watch the cluster and content change live, restore a conflict, and
//! check that a viewer gets no edit controls.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use thirtyfour::prelude::*;

use crate::harness::*;

pub(crate) const UI: Duration = Duration::from_secs(20);

/// A chromedriver process and a headless chromium session; both end when dropped.
pub(crate) struct Browser {
    driver: Option<WebDriver>,
    _chromedriver: tokio::process::Child,
}

impl Browser {
    pub(crate) async fn start() -> Browser {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let chromedriver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver is installed (Debian: chromium-driver; .ci/run installs it)");
        let url = format!("http://127.0.0.1:{port}");
        let http = client();
        wait_for("chromedriver", UI, || async {
            http.get(format!("{url}/status"))
                .send()
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        let mut caps = DesiredCapabilities::chrome();
        for arg in [
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1280,1000",
            "--ignore-certificate-errors",
        ] {
            caps.add_arg(arg).unwrap();
        }
        if std::path::Path::new("/usr/bin/chromium").exists() {
            caps.set_binary("/usr/bin/chromium").unwrap();
        }
        let driver = WebDriver::new(url, caps).await.expect("a browser session");
        Browser {
            driver: Some(driver),
            _chromedriver: chromedriver,
        }
    }

    pub(crate) fn d(&self) -> &WebDriver {
        self.driver.as_ref().unwrap()
    }

    pub(crate) async fn login(&self, base: &str, user: &str, password: &str) {
        self.d().goto(format!("{base}admin")).await.unwrap();
        self.visible("username").await;
        self.d()
            .find(By::Id("username"))
            .await
            .unwrap()
            .send_keys(user)
            .await
            .unwrap();
        self.d()
            .find(By::Id("password"))
            .await
            .unwrap()
            .send_keys(password)
            .await
            .unwrap();
        self.d()
            .find(By::Id("login-button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.visible("logout").await;
    }

    /// Waits until the element with this id is displayed.
    pub(crate) async fn visible(&self, id: &str) {
        wait_for(&format!("#{id} to show"), UI, || async {
            let e = self.d().find(By::Id(id)).await.ok()?;
            e.is_displayed().await.ok()?.then_some(())
        })
        .await
    }

    /// Waits until some element matching `css` has text containing `text`.
    pub(crate) async fn shows(&self, css: &str, text: &str) {
        wait_for(&format!("{css} to show {text:?}"), UI, || async {
            for e in self.d().find_all(By::Css(css)).await.ok()? {
                if e.text().await.ok()?.contains(text) {
                    return Some(());
                }
            }
            None
        })
        .await
    }

    async fn texts(&self, css: &str) -> Vec<String> {
        let mut out = Vec::new();
        for e in self.d().find_all(By::Css(css)).await.unwrap() {
            out.push(e.text().await.unwrap());
        }
        out
    }

    async fn count(&self, css: &str) -> usize {
        self.d().find_all(By::Css(css)).await.unwrap().len()
    }

    async fn go(&self, hash: &str) {
        self.d()
            .execute(&format!("location.hash = {};", json!(hash)), vec![])
            .await
            .unwrap();
    }
}

impl Drop for Browser {
    /// Ends the browser session before chromedriver is killed, so no chromium outlives the test
    /// (a quit merely spawned would never run once the test's runtime stops).
    fn drop(&mut self) {
        if let Some(d) = self.driver.take() {
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async {
                    let _ = tokio::time::timeout(UI, d.quit()).await;
                })
            });
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_shows_every_member_and_content_appears_live() {
    let c = FixedCluster::start(2, &[]).await;
    c.converged().await;
    let b = Browser::start().await;
    b.login(&c.leader.url, ADMIN, ADMIN_PW).await;
    b.shows("#cluster-summary", "FIXED").await;
    for id in ["leader", "f1", "f2"] {
        b.shows(&format!("#members tr[data-member-id='{id}']"), id)
            .await;
    }
    b.shows("#members tr[data-member-id='f1']", "reachable")
        .await;
    if let Ok(path) = std::env::var("FOLIO_SCREENSHOT") {
        b.d().screenshot(std::path::Path::new(&path)).await.unwrap();
    }

    // Server B's page, left open on the workbook list. The browser's session cookie from server A
    // is valid there too: sessions are cluster-wide, so no second login.
    let (f1, f2) = (&c.followers[0], &c.followers[1]);
    b.d()
        .goto(format!("{}admin#/workbooks", f2.url))
        .await
        .unwrap();
    b.visible("logout").await;
    b.visible("items").await;
    b.d()
        .execute("window.__notReloaded = true;", vec![])
        .await
        .unwrap();
    // An edit through server A's API appears on server B's page without a reload.
    let t1 = f1.admin().await;
    let w = f1
        .create(&t1, "workbooks", "Quarterly sales", json!({"sheets": 4}))
        .await;
    b.shows("#items tbody tr", "Quarterly sales").await;
    let row = b
        .texts(&format!(
            "#items tr[data-item-id='{}']",
            w["id"].as_str().unwrap()
        ))
        .await
        .join(" ");
    assert!(
        row.contains("admin") && row.contains("f1"),
        "author and origin are shown: {row}"
    );
    let kept = b
        .d()
        .execute("return window.__notReloaded === true;", vec![])
        .await
        .unwrap();
    assert_eq!(kept.json(), &json!(true), "the page was not reloaded");

    // The item view shows the history of the edit.
    b.d()
        .find(By::LinkText("Quarterly sales"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.visible("item-content").await;
    b.shows("#history tbody", "admin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_conflict_is_shown_side_by_side_and_restored_from_the_page() {
    let c = FixedCluster::start(2, &[]).await;
    let (f1, f2) = (&c.followers[0], &c.followers[1]);
    let (t1, t2) = (f1.admin().await, f2.admin().await);
    let w = f1
        .create(
            &t1,
            "workbooks",
            "Budget",
            json!({"total": 100, "owner": "ana"}),
        )
        .await;
    let id = w["id"].as_str().unwrap().to_string();
    c.converged().await;
    c.links[1].cut();
    f1.put_json(
        &format!("api/v1/workbooks/{id}"),
        Some(&t1),
        &json!({"name": "Budget", "content": {"total": 150, "owner": "ana"}}),
    )
    .await;
    let mine = f2
        .put_json(
            &format!("api/v1/workbooks/{id}"),
            Some(&t2),
            &json!({"name": "Budget", "content": {"total": 90, "owner": "ana"}}),
        )
        .await;
    assert_eq!(mine.status, 202);
    c.links[1].restore();
    c.converged().await;

    let b = Browser::start().await;
    b.login(&f2.url, ADMIN, ADMIN_PW).await;
    b.go("#/conflicts").await;
    b.shows("#conflicts tbody tr", "Budget").await;
    b.click_link("Budget").await;
    b.shows("#conflict-loser", "90").await;
    b.shows("#conflict-winner", "150").await;
    let ins = b.texts("#conflict-diff .ins").await.join("\n");
    let del = b.texts("#conflict-diff .del").await.join("\n");
    assert!(
        ins.contains("90") && del.contains("150"),
        "the diff shows what differs: +{ins} -{del}"
    );
    assert!(
        !ins.contains("owner"),
        "unchanged lines are not marked: {ins}"
    );
    b.d()
        .find(By::Id("restore-conflict"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.shows("#notice", "now current").await;
    c.converged().await;
    for s in c.all() {
        let t = s.admin().await;
        assert_eq!(
            s.get(&format!("api/v1/workbooks/{id}"), Some(&t))
                .await
                .body["content"]["total"],
            90
        );
        assert_eq!(
            s.get("api/v1/conflicts", Some(&t)).await.body["items"],
            json!([])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_viewer_gets_no_edit_controls_and_errors_read_plainly_over_https() {
    let certs = tempfile::tempdir().unwrap();
    let made = folio::certs::make(certs.path(), &["127.0.0.1".to_string()]).unwrap();
    let s = start(&[
        ("server.tls.cert", made.cert.to_str().unwrap()),
        ("server.tls.key", made.key.to_str().unwrap()),
    ])
    .await;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&made.ca).unwrap()).unwrap();
    let mut s = s;
    s.http = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let admin = s.admin().await;
    s.user_with_role(&admin, "vera", "viewer").await;
    let w = s
        .create(&admin, "workbooks", "Read me", json!({"a": 1}))
        .await;
    assert_eq!(
        s.call(
            Method::GET,
            &format!("api/v1/workbooks/{}", w["id"].as_str().unwrap()),
            Some(&admin),
            None
        )
        .await
        .status,
        200
    );

    let b = Browser::start().await;
    // A wrong password is told in plain words.
    b.d().goto(format!("{}admin", s.url)).await.unwrap();
    b.visible("username").await;
    b.d()
        .find(By::Id("username"))
        .await
        .unwrap()
        .send_keys("vera")
        .await
        .unwrap();
    b.d()
        .find(By::Id("password"))
        .await
        .unwrap()
        .send_keys("not-her-password")
        .await
        .unwrap();
    b.d()
        .find(By::Id("login-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.shows("#error", "wrong user name or password").await;
    // Every control has a label.
    let unlabeled = b
        .d()
        .execute(
            "return [...document.querySelectorAll('input,textarea,select')].filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.id);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(unlabeled.json(), &json!([]), "controls without a label");

    b.login(&s.url, "vera", "vera-password").await;
    b.go("#/workbooks").await;
    b.shows("#items tbody", "Read me").await;
    assert_eq!(b.count("#new-item").await, 0, "no New button");
    b.d()
        .find(By::LinkText("Read me"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.visible("item-content").await;
    assert_eq!(
        b.count("#save-item").await + b.count("#delete-item").await,
        0,
        "no save or delete"
    );
    let ro = b
        .d()
        .execute(
            "return document.getElementById('item-content').readOnly;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(ro.json(), &json!(true));
    assert_eq!(
        b.count("#history button").await,
        b.count("#history tbody tr").await,
        "only Show buttons, no Restore"
    );
    assert_eq!(
        b.count("a[href='#/users']").await + b.count("a[href='#/config']").await,
        0,
        "no admin sections"
    );
    b.go("#/conflicts").await;
    assert_eq!(
        b.count("#restore-conflict").await + b.count("#dismiss-conflict").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admins_see_the_configuration_redacted_and_manage_users() {
    let s = start(&[("cluster.shared.secret.previous", "very-secret-old-value")]).await;
    let b = Browser::start().await;
    b.login(&s.url, ADMIN, ADMIN_PW).await;
    b.go("#/config").await;
    b.shows("#config tbody", "server.listen").await;
    let text = b.texts("#config tbody tr").await.join("\n");
    assert!(
        !text.contains(ADMIN_PW) && !text.contains("very-secret-old-value"),
        "secrets are redacted: {text}"
    );
    assert!(text.contains("******"));
    b.go("#/users").await;
    b.visible("new-username").await;
    b.d()
        .find(By::Id("new-username"))
        .await
        .unwrap()
        .send_keys("pat")
        .await
        .unwrap();
    b.d()
        .find(By::Id("new-password"))
        .await
        .unwrap()
        .send_keys("pat-password-1")
        .await
        .unwrap();
    b.d()
        .find(By::Css("#user-form button[type='submit']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.shows("#users tr[data-user='pat']", "pat").await;
    s.login("pat", "pat-password-1").await;

    // An admin sets another user's password from the page.
    let pat = "#users tr[data-user='pat']";
    b.d()
        .find(By::Css(format!("{pat} .set-password")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.d()
        .find(By::Css(format!("{pat} .new-user-password")))
        .await
        .unwrap()
        .send_keys("pat-password-2")
        .await
        .unwrap();
    b.d()
        .find(By::Css(format!("{pat} .save-user-password")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.shows("#notice", "The password of pat is set").await;
    s.login("pat", "pat-password-2").await;
}

impl Browser {
    /// The value of the form field with this id.
    async fn value(&self, id: &str) -> String {
        let e = self.d().find(By::Id(id)).await.unwrap();
        e.prop("value").await.unwrap().unwrap_or_default()
    }

    /// Clicks the link with this text; the lists are drawn afresh every second, so a link found
    /// a moment before the click may be gone: it is looked for again until the click lands.
    async fn click_link(&self, text: &str) {
        wait_for(&format!("a click on the link {text:?}"), UI, || async {
            let link = self.d().find(By::LinkText(text)).await.ok()?;
            link.click().await.ok()
        })
        .await
    }

    async fn click(&self, id: &str) {
        self.d()
            .find(By::Id(id))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// Waits until the page has refreshed what it shows at least once more.
    async fn refreshed(&self) {
        let count = || async {
            let v = self
                .d()
                .execute("return document.body.dataset.refreshes || '0';", vec![])
                .await
                .ok()?;
            v.json().as_str()?.parse::<u64>().ok()
        };
        let before = count().await.unwrap_or(0);
        wait_for("the page to refresh", UI, || async {
            count().await.filter(|n| *n > before).map(|_| ())
        })
        .await
    }
}

/// The sequence that used to revert a colleague's save: a form edited, focus moved off it, the
/// item saved through the API meanwhile, then Save. The page must say at once that the item
/// changed, refuse to save over it (however often Save is pressed), and merge the colleague's
/// change into the user's text on request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_form_is_never_saved_over_a_colleagues_edit() {
    let s = start(&[]).await;
    let admin = s.admin().await;
    let w = s
        .create(
            &admin,
            "workbooks",
            "Sales",
            json!({"datasource": "db1", "sheets": 2}),
        )
        .await;
    let id = w["id"].as_str().unwrap().to_string();
    let path = format!("api/v1/workbooks/{id}");

    let b = Browser::start().await;
    b.login(&s.url, ADMIN, ADMIN_PW).await;
    b.go(&format!("#/item/workbooks/{id}")).await;
    wait_for("the form to load", UI, || async {
        (b.value("item-name").await == "Sales").then_some(())
    })
    .await;
    let name = b.d().find(By::Id("item-name")).await.unwrap();
    name.clear().await.unwrap();
    name.send_keys("Sales 2026").await.unwrap();
    // Focus leaves the form: a click on the page's heading.
    b.click("item-title").await;

    let rev = s.get(&path, Some(&admin)).await.body["rev"]
        .as_str()
        .unwrap()
        .to_string();
    let colleague = answer(
        s.http
            .put(format!("{}{path}", s.url))
            .bearer_auth(&admin)
            .header("if-match", format!("\"{rev}\""))
            .json(&json!({"name": "Sales", "content": {"datasource": "db2", "sheets": 2}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(colleague.status, 200, "{}", colleague.text);

    // Said at once, while the form is still being edited, and the user's text is kept.
    b.visible("stale").await;
    b.shows("#stale-text", "changed since you opened it").await;
    assert_eq!(b.value("item-name").await, "Sales 2026");

    // Save, twice, the second after another refresh: refused both times, nothing overwritten.
    for _ in 0..2 {
        b.click("save-item").await;
        b.shows("#stale-text", "Not saved").await;
        b.click("item-title").await;
        b.refreshed().await;
    }
    let now = s.get(&path, Some(&admin)).await.body;
    assert_eq!(now["name"], "Sales");
    assert_eq!(now["content"]["datasource"], "db2");

    // The difference, then the merge: both changes end up in the saved revision.
    b.click("stale-show").await;
    b.shows("#stale-diff .del", "db2").await;
    b.shows("#stale-legend", "your text").await;
    b.click("stale-merge").await;
    b.shows("#notice", "Merged").await;
    assert_eq!(b.value("item-name").await, "Sales 2026");
    assert!(b.value("item-content").await.contains("db2"));
    b.click("save-item").await;
    b.shows("#notice", "Saved as revision").await;
    let saved = s.get(&path, Some(&admin)).await.body;
    assert_eq!(saved["name"], "Sales 2026");
    assert_eq!(saved["content"], json!({"datasource": "db2", "sheets": 2}));
}

/// Every user changes their own password from the page; the bootstrap administrator is told on
/// every screen while it still uses the configured password; logging out leaves no route for
/// the next user.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_change_their_own_password_and_the_bootstrap_password_is_called_out() {
    let s = start(&[]).await;
    let admin = s.admin().await;
    s.user_with_role(&admin, "vera", "viewer").await;

    let b = Browser::start().await;
    b.login(&s.url, ADMIN, ADMIN_PW).await;
    b.visible("bootstrap-warning").await;
    b.go("#/workbooks").await;
    b.visible("content-view").await;
    assert!(
        b.d()
            .find(By::Id("bootstrap-warning"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap(),
        "the warning stays on every screen"
    );
    let change = |current: &'static str, next: &'static str| {
        let b = &b;
        async move {
            b.go("#/password").await;
            b.visible("password-form").await;
            for (id, text) in [
                ("current-password", current),
                ("new-password-1", next),
                ("new-password-2", next),
            ] {
                let e = b.d().find(By::Id(id)).await.unwrap();
                e.clear().await.unwrap();
                e.send_keys(text).await.unwrap();
            }
            b.click("change-password").await;
        }
    };
    change(ADMIN_PW, "admin-password-2").await;
    b.shows("#notice", "Password changed").await;
    wait_for("the warning to go", UI, || async {
        let e = b.d().find(By::Id("bootstrap-warning")).await.ok()?;
        (!e.is_displayed().await.ok()?).then_some(())
    })
    .await;
    b.click("logout").await;
    b.visible("login-form").await;
    let hash = b
        .d()
        .execute("return location.hash;", vec![])
        .await
        .unwrap();
    assert_eq!(hash.json(), &json!(""), "the next user starts afresh");

    b.login(&s.url, "vera", "vera-password").await;
    assert!(
        !b.d()
            .find(By::Id("bootstrap-warning"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap()
    );
    change("not-her-password", "vera-password-2").await;
    b.shows("#error", "current password is not right").await;
    change("vera-password", "vera-password-2").await;
    b.shows("#notice", "Password changed").await;
    let login = |user: &'static str, pw: &'static str| {
        let s = &s;
        async move {
            s.post_json(
                "api/v1/login",
                None,
                &json!({"username": user, "password": pw}),
            )
            .await
            .status
        }
    };
    assert_eq!(login("vera", "vera-password-2").await, 200);
    assert_eq!(login("vera", "vera-password").await, 401);
    assert_eq!(login(ADMIN, "admin-password-2").await, 200);
}

/// A follower's page says on every screen when its leader goes silent — naming it, since when,
/// and what saves do meanwhile — marks the items whose saves wait for it, and says when it is
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_followers_page_tells_when_its_leader_is_gone_and_marks_queued_saves() {
    let mut c = FixedCluster::start(1, &[]).await;
    c.converged().await;
    let f = &c.followers[0];
    let b = Browser::start().await;
    b.login(&f.url, ADMIN, ADMIN_PW).await;
    b.go("#/workbooks").await;
    b.visible("content-view").await;

    c.links[0].stall();
    b.visible("leader-alert").await;
    b.shows("#leader-alert", "cannot reach its leader leader")
        .await;
    b.shows("#leader-alert", "queued").await;
    b.shows("#leader-alert", "last heard").await;
    let t = f.login(ADMIN, ADMIN_PW).await;
    let saved = f
        .post_json(
            "api/v1/workbooks",
            Some(&t),
            &json!({"name": "Offline plan", "content": {"q": 1}}),
        )
        .await;
    assert_eq!(saved.status, 202, "{}", saved.text);
    let id = saved.body["id"].as_str().unwrap().to_string();
    let row = format!("#items tr[data-item-id='{id}']");
    b.shows(&row, "Offline plan").await;
    b.shows(&format!("{row} .pending"), "pending").await;
    b.go(&format!("#/item/workbooks/{id}")).await;
    b.shows("#item-pending", "waiting for the leader").await;
    b.go("#/cluster").await;
    b.shows("#leader-alert", "cannot reach its leader").await;

    c.links[0].restore();
    b.shows("#notice", "reachable again").await;
    wait_for("the alert to go", UI, || async {
        let e = b.d().find(By::Id("leader-alert")).await.ok()?;
        (!e.is_displayed().await.ok()?).then_some(())
    })
    .await;
    b.go("#/workbooks").await;
    b.shows(&row, "Offline plan").await;
    wait_for("the pending mark to go", UI, || async {
        (b.count(&format!("{row} .pending")).await == 0).then_some(())
    })
    .await;

    // The leader stopped outright: said again, within seconds.
    c.leader.running.take().unwrap().stop().await;
    b.visible("leader-alert").await;
    b.shows("#leader-alert", "cannot reach its leader leader")
        .await;
}

/// The page says where you are and what to do: the server and its role in the header, the
/// current section marked, empty lists that say how to fill them, no Delete on a new item, and
/// an editor with line numbers and a Format button.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_says_where_you_are_and_offers_only_what_works() {
    let s = start(&[]).await;
    let server = s.get("health", None).await.body["server"]
        .as_str()
        .unwrap()
        .to_string();
    let b = Browser::start().await;
    b.login(&s.url, ADMIN, ADMIN_PW).await;
    b.shows("#server-badge", &format!("{server} · standalone"))
        .await;
    b.go("#/workbooks").await;
    b.shows("#items tr.empty", "No workbooks yet: create one with New")
        .await;
    let current = b
        .d()
        .find(By::Css("#nav a[aria-current='page']"))
        .await
        .unwrap();
    assert_eq!(current.text().await.unwrap(), "Workbooks");

    b.click("new-item").await;
    b.visible("item-form").await;
    assert!(
        !b.d()
            .find(By::Id("delete-item"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap(),
        "a new item has nothing to delete"
    );
    let content = b.d().find(By::Id("item-content")).await.unwrap();
    content.clear().await.unwrap();
    content.send_keys(r#"{"b": 1, "a": [1, 2]}"#).await.unwrap();
    b.click("format-item").await;
    let formatted = "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": 1\n}";
    wait_for("the content to be formatted", UI, || async {
        (b.value("item-content").await == formatted).then_some(())
    })
    .await;
    let gutter = b.d().find(By::Id("item-lines")).await.unwrap();
    assert_eq!(
        gutter.text().await.unwrap().split_whitespace().count(),
        formatted.lines().count(),
        "a number per line"
    );
}

/// A deleted workbook is listed under "Show deleted", its page shows its last content read-only
/// with who deleted it, two revisions can be compared, and Restore brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_workbook_is_found_compared_and_restored_from_the_page() {
    let s = start(&[]).await;
    let admin = s.admin().await;
    let w = s
        .create(&admin, "workbooks", "Forecast", json!({"v": 1}))
        .await;
    let id = w["id"].as_str().unwrap().to_string();
    let path = format!("api/v1/workbooks/{id}");
    let put = s
        .put_json(
            &path,
            Some(&admin),
            &json!({"name": "Forecast", "content": {"v": 2}}),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.text);
    assert_eq!(
        s.call(Method::DELETE, &path, Some(&admin), None)
            .await
            .status,
        200
    );

    let b = Browser::start().await;
    b.login(&s.url, ADMIN, ADMIN_PW).await;
    b.go("#/workbooks").await;
    b.shows("#items tr.empty", "No workbooks yet").await;
    b.click("deleted-toggle").await;
    b.shows("#content-title", "Deleted workbooks").await;
    let row = format!("#items tr[data-item-id='{id}']");
    b.shows(&row, "Forecast").await;
    b.click_link("Forecast").await;
    b.shows("#item-title", "Forecast (deleted)").await;
    b.shows("#deleted-text", "Deleted by admin").await;
    wait_for("the last content to show", UI, || async {
        b.value("item-content")
            .await
            .contains("\"v\": 2")
            .then_some(())
    })
    .await;
    assert!(
        !b.d()
            .find(By::Id("save-item"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap(),
        "a deleted item cannot be saved over"
    );

    b.shows("#history tbody", "Forecast").await;
    b.click("compare").await;
    b.shows("#compare-diff .del", "\"v\": 1").await;
    b.shows("#compare-diff .ins", "\"v\": 2").await;
    b.shows("#compare-legend", "- revision 1-").await;

    b.click("restore-deleted").await;
    b.shows("#notice", "Restored Forecast").await;
    // The restoring revision says what it restored.
    b.shows("#history tbody", "(restores 2-").await;
    let back = s.get(&path, Some(&admin)).await;
    assert_eq!(back.status, 200, "{}", back.text);
    assert_eq!(back.body["content"], json!({"v": 2}));
    b.shows("#item-title", "Forecast").await;
    wait_for("the page to show the live item", UI, || async {
        let title = b
            .d()
            .find(By::Id("item-title"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (!title.contains("deleted")).then_some(())
    })
    .await;
}

/// Each main screen renders; with `FOLIO_SCREENSHOTS=DIR` in the environment its picture is also
/// written there (the ones in `docs/screenshots/` were made so).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_main_screen_renders() {
    let c = FixedCluster::start(2, &[]).await;
    c.converged().await;
    let t = c.leader.admin().await;
    let w = c
        .leader
        .create(
            &t,
            "workbooks",
            "Quarterly sales",
            json!({"datasource": "warehouse", "sheets": [{"title": "Q1", "charts": 3}]}),
        )
        .await;
    let id = w["id"].as_str().unwrap().to_string();
    c.leader
        .put_json(
            &format!("api/v1/workbooks/{id}"),
            Some(&t),
            &json!({"name": "Quarterly sales", "content": {"datasource": "warehouse", "sheets": [{"title": "Q1", "charts": 4}, {"title": "Q2", "charts": 2}]}}),
        )
        .await;
    c.leader
        .create(&t, "workbooks", "Churn", json!({"datasource": "crm"}))
        .await;
    c.leader
        .create(&t, "datasources", "warehouse", json!({"kind": "postgres"}))
        .await;
    c.converged().await;

    let b = Browser::start().await;
    b.login(&c.leader.url, ADMIN, ADMIN_PW).await;
    let out = std::env::var_os("FOLIO_SCREENSHOTS").map(std::path::PathBuf::from);
    let screens: [(&str, String, &str); 5] = [
        (
            "cluster",
            "#/cluster".into(),
            "#members tr[data-member-id='f2']",
        ),
        ("workbooks", "#/workbooks".into(), "#items tbody tr"),
        (
            "item",
            format!("#/item/workbooks/{id}"),
            "#history tbody tr",
        ),
        ("users", "#/users".into(), "#users tbody tr"),
        ("password", "#/password".into(), "#password-form"),
    ];
    for (name, hash, ready) in screens {
        b.go(&hash).await;
        wait_for(&format!("{name} to render"), UI, || async {
            (b.count(ready).await > 0).then_some(())
        })
        .await;
        if name == "item" {
            b.click("compare").await;
            b.visible("compare-diff").await;
        }
        let png = b.d().screenshot_as_png().await.unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{name}: a real picture ({} bytes)",
            png.len()
        );
        if let Some(dir) = &out {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
        }
    }
}

/// A server whose data volume has less free space than `store.min_free.mb` says so on every page
/// (here it is asked to keep twice what its volume has free: saves are refused, logins are not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_says_when_the_data_volume_is_full() {
    let s = start(&[]).await;
    let free = s.get("health", None).await.body["storage"]["free_bytes"]
        .as_u64()
        .unwrap();
    let keep = (2 * free / (1 << 20)).to_string();
    let dir = s.stop().await;
    let s = start_in(dir, &[("store.min_free.mb", keep.as_str())]).await;
    let b = Browser::start().await;
    b.login(&s.url, ADMIN, ADMIN_PW).await;
    b.visible("storage-alert").await;
    b.shows("#storage-alert", "is full").await;
    b.shows("#storage-alert", "Saves are refused until space is freed")
        .await;
    b.shows("#storage-alert", &format!("{keep}.0 MiB")).await;
    let t = s.admin().await;
    let refused = s
        .post_json(
            "api/v1/workbooks",
            Some(&t),
            &json!({"name": "plan", "content": 1}),
        )
        .await;
    assert_eq!(refused.error(507), "insufficient_storage");
}
