//! The web assets served by the binary, embedded at build time from `net/web/`: the JavaScript client
//! (`/client.js`, its types `/client.d.ts`) and the monitor page (`/`, `/monitor`, with its script and
//! style). docs/client.md describes the client, docs/monitor.md the page.

/// One embedded file and where it is served.
#[derive(Debug)]
pub struct Asset {
    pub paths: &'static [&'static str],
    pub content_type: &'static str,
    pub body: &'static str,
    /// An HTML page: served with [`PAGE_POLICY`].
    pub page: bool,
}

/// Every asset. The page loads nothing else (no CDN): scripts and styles come from here, the figures from
/// `/api/ws/stats` and the stream.
pub const ASSETS: &[Asset] = &[
    Asset {
        paths: &["/", "/monitor"],
        content_type: "text/html; charset=utf-8",
        body: include_str!("../web/monitor.html"),
        page: true,
    },
    Asset {
        paths: &["/monitor.js"],
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/monitor.js"),
        page: false,
    },
    Asset {
        paths: &["/monitor.css"],
        content_type: "text/css; charset=utf-8",
        body: include_str!("../web/monitor.css"),
        page: false,
    },
    Asset {
        paths: &["/client.js"],
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/client.js"),
        page: false,
    },
    Asset {
        paths: &["/client.d.ts"],
        content_type: "application/typescript; charset=utf-8",
        body: include_str!("../web/client.d.ts"),
        page: false,
    },
];

/// The page's Content-Security-Policy: its own scripts and styles only (no inline script or style), its
/// own server for the stats and the stream (`'self'` covers `ws:`/`wss:` to the same host), no frames.
pub const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The asset served at `path`.
pub fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.paths.contains(&path))
}

/// The headers an asset is served with besides the usual ones: the policy on pages, and on every asset no
/// type sniffing and no referrer (a `?token=` in the page's address must not leave it).
pub fn headers(asset: &Asset) -> String {
    let mut h = String::from("X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n");
    if asset.page {
        h.push_str(&format!("Content-Security-Policy: {PAGE_POLICY}\r\nX-Frame-Options: DENY\r\n"));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_assets_are_embedded_small_and_load_nothing_from_elsewhere() {
        let total: usize = ASSETS.iter().map(|a| a.body.len()).sum();
        assert!(total < 150 * 1024, "the page's assets take {total} bytes, over 150 KB");
        let page = find("/monitor").unwrap();
        assert!(std::ptr::eq(page, find("/").unwrap()));
        for asset in ASSETS {
            let body = asset.body;
            assert!(!body.contains("http://") && !body.contains("https://"), "{:?} names another host", asset.paths);
        }
        // No inline script or style: the policy would refuse them.
        assert!(!page.body.contains("<script>") && !page.body.contains("style="), "inline code in the page");
        for src in ["/monitor.js", "/monitor.css"] {
            assert!(page.body.contains(src), "the page does not load {src}");
            assert!(find(src).is_some());
        }
        assert!(headers(page).contains("Content-Security-Policy: default-src 'none'; script-src 'self';"));
        assert!(!headers(find("/client.js").unwrap()).contains("Content-Security-Policy"));
    }
}
