//! One table of ab-routing cases, run by several runtimes: natively against
//! `Router` (filters/ab-routing/tests/native_cases.rs), against the compiled
//! `dist/ab-routing.wasm` in the wasm-test-harness, and a subset through real
//! Envoy (tests/). Expected variants were computed independently with Python
//! `mmh3` and the slot formula documented in `assign.rs`.

#![allow(dead_code)]

/// sha256("letmein")
pub const QA_SECRET: &str = "letmein";

pub const CONFIG: &str = r#"{
  "experiments": [
    {
      "name": "checkout",
      "variants": [{"name": "control", "weight": 50}, {"name": "treatment", "weight": 50}],
      "sticky_key": [{"header": "x-user-id"}, {"cookie": "session"}, "visitor_cookie"],
      "match": {"path_prefixes": ["/checkout"]}
    },
    {
      "name": "search",
      "header": "x-ab-search",
      "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}, {"name": "c", "weight": 1}],
      "sticky_key": [{"header": "x-user-id"}],
      "match": {"hosts": ["shop.example.com", "*.example.org"]}
    }
  ],
  "qa_override": {"secret_sha256": "1c8bfe8f801d79745c4631d09fff36c82aa37fc4cce4fc946683d7b336b63032"}
}"#;

/// What the upstream must see for one header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Exactly one value, equal to this.
    Is(&'static str),
    /// Header absent.
    Absent,
    /// Exactly one value, one of these.
    OneOf(&'static [&'static str]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WantCookie {
    None,
    /// `Set-Cookie: mg_visitor=<32 hex>; Max-Age=7776000; Path=/; HttpOnly; SameSite=Lax`
    NewVisitor,
}

pub struct Case {
    pub name: &'static str,
    /// Request headers including pseudo-headers, as the client sends them.
    pub request: &'static [(&'static str, &'static str)],
    pub upstream: &'static [(&'static str, Want)],
    pub set_cookie: WantCookie,
}

const SHOP: (&str, &str) = (":authority", "shop.example.com");
const GET: (&str, &str) = (":method", "GET");
const CHECKOUT: (&str, &str) = (":path", "/checkout/cart");

pub const CASES: &[Case] = &[
    Case {
        name: "user header picks variant in both experiments",
        request: &[GET, SHOP, CHECKOUT, ("x-user-id", "user-1")],
        upstream: &[
            ("x-ab-variant", Want::Is("control")),
            ("x-ab-search", Want::Is("c")),
        ],
        set_cookie: WantCookie::None,
    },
    Case {
        name: "another user lands in treatment",
        request: &[GET, SHOP, CHECKOUT, ("x-user-id", "bob")],
        upstream: &[
            ("x-ab-variant", Want::Is("treatment")),
            ("x-ab-search", Want::Is("a")),
        ],
        set_cookie: WantCookie::None,
    },
    Case {
        name: "client-forged variant header is overwritten",
        request: &[
            GET,
            SHOP,
            CHECKOUT,
            ("x-user-id", "bob"),
            ("x-ab-variant", "control"),
            ("x-ab-variant", "x"),
        ],
        upstream: &[("x-ab-variant", Want::Is("treatment"))],
        set_cookie: WantCookie::None,
    },
    Case {
        name: "forged variant header is stripped where the experiment does not match",
        request: &[
            GET,
            SHOP,
            (":path", "/home"),
            ("x-user-id", "bob"),
            ("x-ab-variant", "treatment"),
        ],
        upstream: &[
            ("x-ab-variant", Want::Absent),
            ("x-ab-search", Want::Is("a")),
        ],
        set_cookie: WantCookie::None,
    },
    Case {
        name: "cookie key when the header is missing",
        request: &[
            GET,
            SHOP,
            CHECKOUT,
            ("cookie", "theme=dark; session=sess-42"),
        ],
        upstream: &[
            ("x-ab-variant", Want::Is("treatment")),
            ("x-ab-search", Want::Absent),
        ],
        set_cookie: WantCookie::None,
    },
    Case {
        name: "header key wins over cookie key",
        request: &[
            GET,
            SHOP,
            CHECKOUT,
            ("x-user-id", "alice"),
            ("cookie", "session=sess-42"),
        ],
        upstream: &[
            ("x-ab-variant", Want::Is("control")),
            ("x-ab-search", Want::Is("a")),
        ],
        set_cookie: WantCookie::None,
    },
    Case {
        name: "empty header value falls through to the cookie",
        request: &[
            GET,
            SHOP,
            CHECKOUT,
            ("x-user-id", ""),
            ("cookie", "session=sess-42"),
        ],
        upstream: &[("x-ab-variant", Want::Is("treatment"))],
        set_cookie: WantCookie::None,
    },
    Case {
        name: "existing visitor cookie is the key; no new cookie",
        request: &[
            GET,
            SHOP,
            CHECKOUT,
            ("cookie", "mg_visitor=0123456789abcdef0123456789abcdef"),
        ],
        upstream: &[("x-ab-variant", Want::Is("control"))],
        set_cookie: WantCookie::None,
    },
    Case {
        name: "no key: a visitor id is generated and set as a cookie",
        request: &[GET, SHOP, CHECKOUT],
        upstream: &[
            ("x-ab-variant", Want::OneOf(&["control", "treatment"])),
            ("x-ab-search", Want::Absent),
        ],
        set_cookie: WantCookie::NewVisitor,
    },
    Case {
        name: "malformed visitor cookie is replaced",
        request: &[GET, SHOP, CHECKOUT, ("cookie", "mg_visitor=<script>")],
        upstream: &[("x-ab-variant", Want::OneOf(&["control", "treatment"]))],
        set_cookie: WantCookie::NewVisitor,
    },
    Case {
        name: "no visitor cookie set where no experiment needs it",
        request: &[GET, SHOP, (":path", "/home")],
        upstream: &[
            ("x-ab-variant", Want::Absent),
            ("x-ab-search", Want::Absent),
        ],
        set_cookie: WantCookie::None,
    },
    Case {
        name: "query string and port do not affect matching",
        request: &[
            GET,
            (":authority", "shop.example.com:8443"),
            (":path", "/checkout?step=2"),
            ("x-user-id", "user-2"),
        ],
        upstream: &[
            ("x-ab-variant", Want::Is("control")),
            ("x-ab-search", Want::Is("b")),
        ],
        set_cookie: WantCookie::None,
    },
    Case {
        name: "wildcard host matches a subdomain",
        request: &[
            GET,
            (":authority", "api.example.org"),
            (":path", "/"),
            ("x-user-id", "user-3"),
        ],
        upstream: &[
            ("x-ab-search", Want::Is("b")),
            ("x-ab-variant", Want::Absent),
        ],
        set_cookie: WantCookie::None,
    },
    Case {
        name: "wildcard host does not match the bare domain",
        request: &[
            GET,
            (":authority", "example.org"),
            (":path", "/"),
            ("x-user-id", "user-3"),
            ("x-ab-search", "c"),
        ],
        upstream: &[("x-ab-search", Want::Absent)],
        set_cookie: WantCookie::None,
    },
    Case {
        name: "QA override with the secret forces a variant",
        request: &[
            GET,
            SHOP,
            CHECKOUT,
            ("x-user-id", "bob"),
            ("x-ab-force", "control"),
            ("x-ab-force-secret", QA_SECRET),
        ],
        upstream: &[
            ("x-ab-variant", Want::Is("control")),
            ("x-ab-search", Want::Is("a")),
            ("x-ab-force", Want::Absent),
            ("x-ab-force-secret", Want::Absent),
        ],
        set_cookie: WantCookie::None,
    },
    Case {
        name: "QA override per experiment",
        request: &[
            GET,
            SHOP,
            CHECKOUT,
            ("x-user-id", "alice"),
            ("x-ab-force", "search=b, checkout=treatment"),
            ("x-ab-force-secret", QA_SECRET),
        ],
        upstream: &[
            ("x-ab-variant", Want::Is("treatment")),
            ("x-ab-search", Want::Is("b")),
        ],
        set_cookie: WantCookie::None,
    },
    Case {
        name: "QA override with a wrong secret is ignored and stripped",
        request: &[
            GET,
            SHOP,
            CHECKOUT,
            ("x-user-id", "bob"),
            ("x-ab-force", "control"),
            ("x-ab-force-secret", "guess"),
        ],
        upstream: &[
            ("x-ab-variant", Want::Is("treatment")),
            ("x-ab-force", Want::Absent),
            ("x-ab-force-secret", Want::Absent),
        ],
        set_cookie: WantCookie::None,
    },
    Case {
        name: "QA override without a secret is ignored and stripped",
        request: &[
            GET,
            SHOP,
            CHECKOUT,
            ("x-user-id", "bob"),
            ("x-ab-force", "control"),
        ],
        upstream: &[
            ("x-ab-variant", Want::Is("treatment")),
            ("x-ab-force", Want::Absent),
        ],
        set_cookie: WantCookie::None,
    },
    Case {
        name: "QA override naming an unknown variant falls back to the sticky key",
        request: &[
            GET,
            SHOP,
            CHECKOUT,
            ("x-user-id", "bob"),
            ("x-ab-force", "purple"),
            ("x-ab-force-secret", QA_SECRET),
        ],
        upstream: &[("x-ab-variant", Want::Is("treatment"))],
        set_cookie: WantCookie::None,
    },
    Case {
        name: "hostile cookie header does not break assignment",
        request: &[
            GET,
            SHOP,
            CHECKOUT,
            ("cookie", ";;;=;==; session; session=sess-42=x; mg_visitor="),
        ],
        upstream: &[("x-ab-variant", Want::OneOf(&["control", "treatment"]))],
        set_cookie: WantCookie::None,
    },
];

/// Checks the upstream header list and response `set-cookie` values against
/// a case; returns a description of every mismatch.
impl meshguard_stage::testing::NamedCase for Case {
    fn name(&self) -> &str {
        self.name
    }
}

pub fn check(case: &Case, upstream: &[(String, String)], set_cookies: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, want) in case.upstream {
        let values: Vec<&str> = upstream
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        let ok = match want {
            Want::Is(v) => values == [*v],
            Want::Absent => values.is_empty(),
            Want::OneOf(vs) => values.len() == 1 && vs.contains(&values[0]),
        };
        if !ok {
            problems.push(format!("{name}: want {want:?}, upstream saw {values:?}"));
        }
    }
    match case.set_cookie {
        WantCookie::None if !set_cookies.is_empty() => {
            problems.push(format!("want no set-cookie, got {set_cookies:?}"));
        }
        WantCookie::NewVisitor
            if !(set_cookies.len() == 1 && is_new_visitor_cookie(&set_cookies[0])) =>
        {
            problems.push(format!("want one new visitor cookie, got {set_cookies:?}"));
        }
        _ => {}
    }
    problems
}

pub fn is_new_visitor_cookie(c: &str) -> bool {
    let Some(rest) = c.strip_prefix("mg_visitor=") else {
        return false;
    };
    let Some((id, attrs)) = rest.split_once(';') else {
        return false;
    };
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        && attrs == " Max-Age=7776000; Path=/; HttpOnly; SameSite=Lax"
}
