//! The console's words, in Simplified Chinese (the default) and English. One struct per
//! language, so a label missing in one language does not compile. The words are the
//! README glossary's.

/// The page language: a `lang` cookie set by the switch in the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Zh,
    En,
}

impl Lang {
    pub const COOKIE: &'static str = "liutong-lang";

    pub fn from_cookie(value: Option<&str>) -> Self {
        match value {
            Some("en") => Self::En,
            _ => Self::Zh,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::Zh => "zh-CN",
            Self::En => "en",
        }
    }

    /// The other language, offered by the switch.
    pub fn other(self) -> Self {
        match self {
            Self::Zh => Self::En,
            Self::En => Self::Zh,
        }
    }

    pub fn cookie_value(self) -> &'static str {
        match self {
            Self::Zh => "zh",
            Self::En => "en",
        }
    }

    pub fn words(self) -> &'static Words {
        match self {
            Self::Zh => &ZH,
            Self::En => &EN,
        }
    }
}

pub struct Words {
    pub title: &'static str,
    pub switch_to: &'static str,
    pub overview: &'static str,
    pub contracts: &'static str,
    pub audit_log: &'static str,
    pub sign_out: &'static str,
    pub signed_in_as: &'static str,
    pub role_admin: &'static str,
    pub role_auditor: &'static str,
    pub participant: &'static str,
    pub health: &'static str,
    pub version: &'static str,
    pub uptime: &'static str,
    pub trust_list: &'static str,
    pub trust_list_age: &'static str,
    pub members: &'static str,
    pub peers: &'static str,
    pub negotiations: &'static str,
    pub witness: &'static str,
    pub checkpoint_size: &'static str,
    pub cosignatures: &'static str,
    pub witnessed: &'static str,
    pub not_witnessed: &'static str,
    pub pending_approvals: &'static str,
    pub audit_log_size: &'static str,
    pub negotiation: &'static str,
    pub side: &'static str,
    pub offer: &'static str,
    pub purpose: &'static str,
    pub state: &'static str,
    pub reason: &'static str,
    pub updated: &'static str,
    pub actions: &'static str,
    pub approve: &'static str,
    pub reject: &'static str,
    pub reject_reason: &'static str,
    pub waiting_for_approval: &'static str,
    pub no_contracts: &'static str,
    pub newer: &'static str,
    pub older: &'static str,
    pub latest_checkpoint: &'static str,
    pub no_checkpoint: &'static str,
    pub verifier_key: &'static str,
    pub verifier_key_help: &'static str,
    pub pin_key: &'static str,
    pub verify_checkpoint: &'static str,
    pub entries: &'static str,
    pub entry: &'static str,
    pub verify_inclusion: &'static str,
    pub not_verified_yet: &'static str,
    pub sign_in_needed: &'static str,
    pub sign_in_help: &'static str,
    pub link_refused: &'static str,
    pub forbidden: &'static str,
    pub form_expired: &'static str,
    pub done: &'static str,
    pub failed: &'static str,
    pub log_growth: &'static str,
    pub verified_in_browser: &'static str,
    pub no_key: &'static str,
    pub key_malformed: &'static str,
    pub no_signature_for_key: &'static str,
    pub signature_invalid: &'static str,
    pub checkpoint_malformed: &'static str,
    pub proof_malformed: &'static str,
    pub root_mismatch: &'static str,
    pub products: &'static str,
    pub publish: &'static str,
    pub title_label: &'static str,
    pub description: &'static str,
    pub classification: &'static str,
    pub format: &'static str,
    pub policy: &'static str,
    pub file: &'static str,
    pub size: &'static str,
    pub published: &'static str,
    pub profile: &'static str,
    pub policy_ok: &'static str,
    pub no_products: &'static str,
    pub version_label: &'static str,
    pub consistent_with: &'static str,
    pub first_checkpoint: &'static str,
    pub not_consistent: &'static str,
    pub log_shrank: &'static str,
    pub peer_catalogs: &'static str,
    pub transfers: &'static str,
    pub received_copies: &'static str,
    pub catalog: &'static str,
    pub peer_address: &'static str,
    pub peer_address_help: &'static str,
    pub browse_catalog: &'static str,
    pub address_empty: &'static str,
    pub address_too_long: &'static str,
    pub address_malformed: &'static str,
    pub peer_unreachable: &'static str,
    pub no_offers: &'static str,
    pub more: &'static str,
    pub request_contract: &'static str,
    pub policy_unreadable: &'static str,
    pub duties: &'static str,
    pub page_token_too_long: &'static str,
    pub received_transfers: &'static str,
    pub dsp_transfers: &'static str,
    pub agreement: &'static str,
    pub progress: &'static str,
    pub chunks: &'static str,
    pub bytes_served: &'static str,
    pub no_transfers: &'static str,
    pub provider: &'static str,
    pub uses: &'static str,
    pub last_use: &'static str,
    pub delete_at: &'static str,
    pub no_copies: &'static str,
    pub no_uses: &'static str,
    pub time: &'static str,
    pub recent_alerts: &'static str,
    pub no_alerts: &'static str,
    pub rule: &'static str,
    pub severity: &'static str,
    pub detail: &'static str,
    pub warning: &'static str,
    pub critical: &'static str,
    pub search_log: &'static str,
    pub search_help: &'static str,
    pub product: &'static str,
    pub since: &'static str,
    pub until: &'static str,
    pub matches: &'static str,
    pub no_matches: &'static str,
    pub more_matches: &'static str,
    pub kept_checkpoints: &'static str,
    pub kept_checkpoints_help: &'static str,
    pub verify_checkpoints: &'static str,
    pub signed_at: &'static str,
    pub witness_key: &'static str,
    pub key_from_node: &'static str,
    pub credential_unreadable: &'static str,
    pub consistent_with_older: &'static str,
    pub no_cosignature: &'static str,
    pub cosignature_invalid: &'static str,
    pub charts: &'static str,
    pub decisions_per_day: &'static str,
    pub decisions_counted: &'static str,
    pub counting_goes_on: &'static str,
    pub permit: &'static str,
    pub deny: &'static str,
    pub bytes_per_agreement: &'static str,
    pub bytes_per_agreement_help: &'static str,
    pub no_deliveries: &'static str,
}

pub static ZH: Words = Words {
    title: "流通 控制台",
    switch_to: "中文",
    overview: "概览",
    contracts: "合约",
    audit_log: "审计日志",
    sign_out: "退出",
    signed_in_as: "当前角色",
    role_admin: "管理员",
    role_auditor: "审计员",
    participant: "参与方",
    health: "健康状态",
    version: "版本",
    uptime: "运行时间",
    trust_list: "信任列表",
    trust_list_age: "信任列表更新于",
    members: "成员",
    peers: "对端",
    negotiations: "协商",
    witness: "见证",
    checkpoint_size: "检查点大小",
    cosignatures: "联署",
    witnessed: "已见证",
    not_witnessed: "未达到见证法定数",
    pending_approvals: "待审批",
    audit_log_size: "审计日志条目",
    negotiation: "协商",
    side: "本方角色",
    offer: "报价",
    purpose: "用途",
    state: "状态",
    reason: "原因",
    updated: "更新时间",
    actions: "操作",
    approve: "批准",
    reject: "拒绝",
    reject_reason: "拒绝原因",
    waiting_for_approval: "重要数据，等待人工审批",
    no_contracts: "暂无合约",
    newer: "较新",
    older: "较早",
    latest_checkpoint: "最新检查点",
    no_checkpoint: "尚无检查点",
    verifier_key: "验证密钥",
    verifier_key_help: "粘贴从数据空间管理方或本节点运营方处独立获得的验证密钥；浏览器本地保存，不信任本页面提供的任何密钥。",
    pin_key: "固定此密钥",
    verify_checkpoint: "在本浏览器中验证检查点签名",
    entries: "条目",
    entry: "条目",
    verify_inclusion: "在本浏览器中验证包含证明",
    not_verified_yet: "尚未验证",
    sign_in_needed: "请先登录",
    sign_in_help: "在节点所在机器上运行 `liutong console login`，然后打开它打印的一次性链接。",
    link_refused: "此登录链接已使用或已过期。请运行 `liutong console login` 获取新链接。",
    forbidden: "当前角色无权执行此操作。",
    form_expired: "表单已失效，请重新打开页面后再提交。",
    done: "已完成",
    failed: "失败",
    log_growth: "审计日志增长",
    verified_in_browser: "已在本浏览器中验证",
    no_key: "验证失败：请先粘贴并固定验证密钥",
    key_malformed: "验证失败：验证密钥格式错误（应为 名称+密钥ID+base64）",
    no_signature_for_key: "验证失败：检查点中没有此验证密钥的签名",
    signature_invalid: "验证失败：Ed25519 签名无效",
    checkpoint_malformed: "验证失败：检查点格式错误",
    proof_malformed: "验证失败：包含证明格式错误",
    root_mismatch: "验证失败：由证明计算出的根哈希与已签名检查点不一致",
    products: "数据产品",
    publish: "发布数据产品",
    title_label: "标题",
    description: "描述",
    classification: "分类分级",
    format: "格式",
    policy: "使用策略",
    file: "数据文件",
    size: "大小",
    published: "发布时间",
    profile: "结构与质量",
    policy_ok: "策略有效",
    no_products: "暂无数据产品",
    version_label: "版本",
    consistent_with: "与本浏览器此前验证的检查点一致，其大小为",
    first_checkpoint: "本浏览器首次验证此日志的检查点",
    not_consistent: "验证失败：一致性证明不成立，日志与此前验证的检查点不一致",
    log_shrank: "验证失败：日志比本浏览器此前验证的检查点更短",
    peer_catalogs: "对端目录",
    transfers: "传输",
    received_copies: "接收的副本",
    catalog: "目录",
    peer_address: "对端地址",
    peer_address_help: "对端 API 的 host:port（如 10.0.0.5:7700），或数据空间协议端点 https://host:port。",
    browse_catalog: "查看目录",
    address_empty: "请填写对端地址（host:port）。",
    address_too_long: "对端地址过长；请填写 host:port 或 https://host:port。",
    address_malformed: "对端地址格式错误：应为 host:port（如 10.0.0.5:7700）或 https://host:port。",
    peer_unreachable: "无法连接该对端；请检查地址，以及对端是否在运行",
    no_offers: "该对端未向本节点展示任何报价",
    more: "更多",
    request_contract: "申请合约",
    policy_unreadable: "无法读取该策略",
    duties: "义务",
    page_token_too_long: "翻页标记过长；请从第一页重新打开。",
    received_transfers: "本节点接收的传输",
    dsp_transfers: "数据空间协议传输",
    agreement: "协议",
    progress: "进度",
    chunks: "数据块",
    bytes_served: "已发送字节",
    no_transfers: "暂无传输",
    provider: "提供方",
    uses: "使用",
    last_use: "最近使用",
    delete_at: "删除时间",
    no_copies: "暂无接收的副本",
    no_uses: "审计日志中此段没有该副本的使用记录",
    time: "时间",
    recent_alerts: "最近告警",
    no_alerts: "节点本次启动以来没有告警",
    rule: "规则",
    severity: "级别",
    detail: "详情",
    warning: "警告",
    critical: "严重",
    search_log: "搜索审计日志",
    search_help: "按数据产品、协议或参与方（至少填一项）搜索；日期按 UTC 计。每条结果的包含证明在本浏览器中验证。",
    product: "数据产品",
    since: "起始日期",
    until: "截止日期",
    matches: "匹配条目",
    no_matches: "没有匹配的条目",
    more_matches: "继续搜索",
    kept_checkpoints: "检查点历史",
    kept_checkpoints_help: "本节点保存的已签名检查点，最新在前。浏览器用在审计日志页固定的验证密钥验证每个签名，并验证相邻检查点之间的一致性。",
    verify_checkpoints: "在本浏览器中验证所列检查点",
    signed_at: "签名时间",
    witness_key: "见证密钥",
    key_from_node: "此密钥来自本节点保存的成员凭证，并非您独立固定的密钥",
    credential_unreadable: "无法读取此见证的成员凭证",
    consistent_with_older: "与下方较早的检查点一致，其大小为",
    no_cosignature: "验证失败：检查点中没有此见证密钥的联署",
    cosignature_invalid: "验证失败：联署签名无效",
    charts: "审计图表",
    decisions_per_day: "每日策略决策",
    decisions_counted: "已统计的条目",
    counting_goes_on: "尚未统计完，刷新本页继续统计",
    permit: "允许",
    deny: "拒绝",
    bytes_per_agreement: "各协议交付字节数",
    bytes_per_agreement_help: "本节点作为提供方交付的字节数：对端 API 上已由接收回执确认的完整交付，加上 DSP 数据端点发送的字节；取前 20 个协议。",
    no_deliveries: "尚无交付",
};

pub static EN: Words = Words {
    title: "Liutong console",
    switch_to: "English",
    overview: "Overview",
    contracts: "Contracts",
    audit_log: "Audit log",
    sign_out: "Sign out",
    signed_in_as: "Role",
    role_admin: "admin",
    role_auditor: "auditor",
    participant: "Participant",
    health: "Health",
    version: "Version",
    uptime: "Uptime",
    trust_list: "Trust list",
    trust_list_age: "Trust list applied",
    members: "Members",
    peers: "Peers",
    negotiations: "Negotiations",
    witness: "Witnessing",
    checkpoint_size: "Checkpoint size",
    cosignatures: "Cosignatures",
    witnessed: "witnessed",
    not_witnessed: "below the witness quorum",
    pending_approvals: "Waiting for approval",
    audit_log_size: "Audit log entries",
    negotiation: "Negotiation",
    side: "Side",
    offer: "Offer",
    purpose: "Purpose",
    state: "State",
    reason: "Reason",
    updated: "Updated",
    actions: "Actions",
    approve: "Approve",
    reject: "Reject",
    reject_reason: "Reason for rejecting",
    waiting_for_approval: "important data, waiting for a person's approval",
    no_contracts: "No contracts yet",
    newer: "Newer",
    older: "Older",
    latest_checkpoint: "Latest checkpoint",
    no_checkpoint: "No checkpoint yet",
    verifier_key: "Verifier key",
    verifier_key_help: "Paste the verifier key you obtained on your own, from the data space's authority or this node's operator. It is kept in this browser; no key this page offers is trusted.",
    pin_key: "Pin this key",
    verify_checkpoint: "Verify the checkpoint's signature in this browser",
    entries: "Entries",
    entry: "Entry",
    verify_inclusion: "Verify the inclusion proof in this browser",
    not_verified_yet: "not verified yet",
    sign_in_needed: "Sign in first",
    sign_in_help: "On the node's machine run `liutong console login` and open the one-time link it prints.",
    link_refused: "This sign-in link was already used or has expired. Run `liutong console login` for a new one.",
    forbidden: "Your role may not do this.",
    form_expired: "This form has expired; open the page again and resubmit.",
    done: "done",
    failed: "failed",
    log_growth: "Audit log growth",
    verified_in_browser: "verified in this browser",
    no_key: "failed: paste and pin a verifier key first",
    key_malformed: "failed: the verifier key is malformed (name+keyid+base64 expected)",
    no_signature_for_key: "failed: the checkpoint carries no signature by this verifier key",
    signature_invalid: "failed: the Ed25519 signature does not verify",
    checkpoint_malformed: "failed: the checkpoint is malformed",
    proof_malformed: "failed: the inclusion proof is malformed",
    root_mismatch: "failed: the root computed from the proof is not the signed checkpoint's root",
    products: "Data products",
    publish: "Publish a data product",
    title_label: "Title",
    description: "Description",
    classification: "Classification",
    format: "Format",
    policy: "Usage policy",
    file: "Data file",
    size: "Size",
    published: "Published",
    profile: "Schema and quality",
    policy_ok: "the policy is valid",
    no_products: "No data products yet",
    version_label: "Version",
    consistent_with: "consistent with the checkpoint this browser verified before, of size",
    first_checkpoint: "the first checkpoint of this log this browser has verified",
    not_consistent: "failed: the consistency proof does not hold; the log is not an extension of the checkpoint verified before",
    log_shrank: "failed: the log is shorter than a checkpoint this browser verified before",
    peer_catalogs: "Peers' catalogs",
    transfers: "Transfers",
    received_copies: "Received copies",
    catalog: "Catalog",
    peer_address: "Peer address",
    peer_address_help: "The peer API's host:port (e.g. 10.0.0.5:7700), or a Dataspace Protocol endpoint https://host:port.",
    browse_catalog: "Show the catalog",
    address_empty: "Give the peer's address (host:port).",
    address_too_long: "The peer address is too long; give host:port or https://host:port.",
    address_malformed: "The peer address is malformed: give host:port (e.g. 10.0.0.5:7700) or https://host:port.",
    peer_unreachable: "The peer cannot be reached; check the address and that the peer is running",
    no_offers: "The peer shows this node no offers",
    more: "More",
    request_contract: "Request a contract",
    policy_unreadable: "The policy cannot be read",
    duties: "duties",
    page_token_too_long: "The page token is too long; open the first page again.",
    received_transfers: "Transfers this node receives",
    dsp_transfers: "Dataspace Protocol transfers",
    agreement: "Agreement",
    progress: "Progress",
    chunks: "Chunks",
    bytes_served: "Bytes served",
    no_transfers: "No transfers yet",
    provider: "Provider",
    uses: "Uses",
    last_use: "Last use",
    delete_at: "Deleted at",
    no_copies: "No received copies yet",
    no_uses: "No uses of this copy in this part of the audit log",
    time: "Time",
    recent_alerts: "Latest alerts",
    no_alerts: "No alerts since the node started",
    rule: "Rule",
    severity: "Severity",
    detail: "Detail",
    warning: "warning",
    critical: "critical",
    search_log: "Search the audit log",
    search_help: "Search by data product, agreement or participant (at least one); days are UTC. Each match's inclusion proof is checked in this browser.",
    product: "Data product",
    since: "From day",
    until: "To day",
    matches: "Matching entries",
    no_matches: "No entry matches",
    more_matches: "Search on",
    kept_checkpoints: "Checkpoint history",
    kept_checkpoints_help: "The signed checkpoints this node kept, newest first. This browser checks each signature with the verifier key pinned on the audit log page, and the consistency between neighbouring checkpoints.",
    verify_checkpoints: "Verify the checkpoints shown in this browser",
    signed_at: "Signed",
    witness_key: "Witness key",
    key_from_node: "this key comes from the membership credential this node keeps, not from a key you pinned",
    credential_unreadable: "this witness's membership credential cannot be read",
    consistent_with_older: "consistent with the older checkpoint below, of size",
    no_cosignature: "failed: the checkpoint carries no cosignature by this witness key",
    cosignature_invalid: "failed: the cosignature does not verify",
    charts: "Audit charts",
    decisions_per_day: "Policy decisions per day",
    decisions_counted: "Entries counted",
    counting_goes_on: "not all counted yet; reload this page to count on",
    permit: "permit",
    deny: "deny",
    bytes_per_agreement: "Bytes delivered per agreement",
    bytes_per_agreement_help: "Bytes this node delivered as provider: whole deliveries on the peer API confirmed by a receipt, plus the bytes the DSP data endpoint sent; the top 20 agreements.",
    no_deliveries: "No deliveries yet",
};

#[cfg(test)]
mod tests {
    use super::{EN, Words, ZH};

    /// A label of the console, read from either language's words.
    type Label = fn(&Words) -> &'static str;

    /// The console's words for each glossary term, as (glossary word, the English form
    /// its labels hold, the labels that name it).
    fn labels_naming_terms() -> Vec<(&'static str, &'static str, Vec<Label>)> {
        vec![
            ("participant", "participant", vec![|w| w.participant]),
            ("member", "member", vec![|w| w.members]),
            ("side", "side", vec![|w| w.side]),
            (
                "trust list",
                "trust list",
                vec![|w| w.trust_list, |w| w.trust_list_age],
            ),
            (
                "data product (product)",
                "product",
                vec![|w| w.products, |w| w.product, |w| w.publish, |w| {
                    w.no_products
                }],
            ),
            ("offer", "offer", vec![|w| w.offer]),
            (
                "negotiation",
                "negotiation",
                vec![|w| w.negotiation, |w| w.negotiations],
            ),
            (
                "agreement",
                "agreement",
                vec![|w| w.agreement, |w| w.bytes_per_agreement],
            ),
            (
                "approval",
                "approval",
                vec![|w| w.pending_approvals, |w| w.waiting_for_approval],
            ),
            ("audit entry", "entr", vec![|w| w.entries, |w| w.entry]),
            (
                "checkpoint",
                "checkpoint",
                vec![
                    |w| w.latest_checkpoint,
                    |w| w.no_checkpoint,
                    |w| w.verify_checkpoint,
                    |w| w.checkpoint_size,
                    |w| w.kept_checkpoints,
                    |w| w.verify_checkpoints,
                ],
            ),
            (
                "witness",
                "witness",
                vec![|w| w.witness, |w| w.witnessed, |w| w.witness_key],
            ),
            (
                "cosignature",
                "cosignature",
                vec![|w| w.cosignatures, |w| w.no_cosignature, |w| {
                    w.cosignature_invalid
                }],
            ),
        ]
    }

    /// The README glossary's rows: (word, the console's Chinese word).
    fn glossary() -> Vec<(String, String)> {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("## Glossary")
            .expect("the README has a glossary");
        assert!(
            readme[start..].contains("| word | 控制台用词 |"),
            "the glossary's second column is the console's Chinese word (控制台用词)"
        );
        readme[start..]
            .lines()
            .skip_while(|l| !l.starts_with("| word |"))
            .skip(2)
            .take_while(|l| l.starts_with("| "))
            .map(|l| {
                let cells: Vec<&str> = l.split(" | ").collect();
                (cells[0][2..].to_owned(), cells[1].to_owned())
            })
            .collect()
    }

    /// A label that names a glossary term uses the glossary's word for it, in both
    /// languages, so the README and the console cannot drift apart.
    #[test]
    fn the_console_says_what_the_glossary_says() {
        let glossary = glossary();
        assert!(glossary.len() > 30, "{glossary:?}");
        for (term, english, labels) in labels_naming_terms() {
            let (_, chinese) = glossary
                .iter()
                .find(|(word, _)| word == term)
                .unwrap_or_else(|| panic!("the glossary has no row for {term:?}"));
            assert!(
                !chinese.is_empty() && chinese != "—",
                "the glossary gives no console word for {term:?}"
            );
            for label in labels {
                let (zh, en) = (label(&ZH), label(&EN));
                assert!(
                    zh.contains(chinese.as_str()),
                    "{term}: {zh:?} does not say {chinese:?}"
                );
                assert!(
                    en.to_lowercase().contains(english),
                    "{term}: {en:?} does not say {english:?}"
                );
            }
        }
        // Every Chinese word the glossary gives is one the console uses.
        let mapped: Vec<&str> = labels_naming_terms().iter().map(|t| t.0).collect();
        for (term, chinese) in &glossary {
            assert!(
                chinese == "—" || mapped.contains(&term.as_str()),
                "the glossary gives {chinese:?} for {term:?}, which no console label is checked for"
            );
        }
    }
}
