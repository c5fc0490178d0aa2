<?php
// A Roundcube webmail session, browser-free: Roundcube's own IMAP engine
// (rcube_imap_generic, from the installed Roundcube) making the calls that
// rcube_imap, Roundcube's storage layer behind the UI, makes when a user
// opens the mailbox list, sorts and threads the message list, reads a
// message and its attachment, flags, deletes, moves to Trash and sends.
// Each step prints one line "STEP name JSON" for roundcube_test.go to check;
// a failed call prints "FAIL step: error" and exits 1.
//
// Environment: RC_LIB (Roundcube's lib dir), RC_HOST, RC_IMAPS_PORT (implicit
// TLS), RC_STARTTLS_PORT (another node, STARTTLS), RC_CA (the server
// certificate's CA), RC_USER, RC_PASS.

define('RCUBE_INSTALL_PATH', sys_get_temp_dir() . '/');
require_once getenv('RC_LIB') . '/bootstrap.php';

function out($step, $v) { echo "STEP $step " . json_encode($v, JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES) . "\n"; }
function fail($step, $imap) { fwrite(STDOUT, "FAIL $step: " . $imap->error . " (code " . $imap->errornum . ")\n"); exit(1); }

function session($port, $mode) {
    $imap = new rcube_imap_generic();
    $ok = $imap->connect(getenv('RC_HOST'), getenv('RC_USER'), getenv('RC_PASS'), [
        'port' => (int) $port,
        'ssl_mode' => $mode,
        'timeout' => 30,
        'auth_type' => null, // as Roundcube's default: the best the server offers
        'socket_options' => ['ssl' => [
            'cafile' => getenv('RC_CA'), 'verify_peer' => true, 'verify_peer_name' => true,
            'peer_name' => getenv('RC_HOST'),
        ]],
        // What Roundcube's config sends by default (imap_conn_options, ident).
        'ident' => ['name' => 'Roundcube', 'version' => RCUBE_VERSION, 'php' => PHP_VERSION, 'os' => PHP_OS],
    ]);
    if (!$ok) {
        fail("connect-$mode", $imap);
    }
    return $imap;
}

// The headers Roundcube's message list asks for beyond fetchHeaders' own
// (rcube_imap::get_fetch_headers, with threading on).
$listHeaders = ['MESSAGE-ID', 'REFERENCES', 'IN-REPLY-TO'];

function listRows($imap, $mailbox, $set) {
    global $listHeaders;
    $h = $imap->fetchHeaders($mailbox, $set, true, false, $listHeaders);
    if ($h === false) fail("fetch-headers $mailbox $set", $imap);
    return rows($h);
}

// A list of headers as the message list shows them (rcube_imap::fetch_headers
// decodes the raw header text with rcube_mime).
function rows($headers) {
    $out = [];
    foreach ($headers as $h) {
        $flags = array_keys((array) $h->flags);
        sort($flags);
        $out[] = [
            'uid' => (int) $h->uid,
            'subject' => rcube_mime::decode_header($h->subject, 'UTF-8'),
            'from' => rcube_mime::decode_header($h->from, 'UTF-8'),
            'size' => (int) $h->size,
            'flags' => $flags,
            'msgid' => $h->messageID,
        ];
    }
    usort($out, function ($a, $b) { return $a['uid'] - $b['uid']; });
    return $out;
}

// ---- login over implicit TLS, the folder list ----
$imap = session(getenv('RC_IMAPS_PORT'), 'ssl');
out('caps', ['sort' => (bool) $imap->getCapability('SORT'), 'thread' => $imap->getCapability('THREAD'),
    'quota' => (bool) $imap->getCapability('QUOTA'), 'move' => (bool) $imap->getCapability('MOVE'),
    'special_use' => (bool) $imap->getCapability('SPECIAL-USE'), 'list_extended' => (bool) $imap->getCapability('LIST-EXTENDED'),
    'delimiter' => $imap->getHierarchyDelimiter()]);

// rcube_imap::list_folders_direct, list_folders_subscribed (LIST-EXTENDED
// and plain LSUB) and get_special_folders.
$all = $imap->listMailboxes('', '*');
if ($all === false) fail('list', $imap);
sort($all);
out('list', $all);
$sub = $imap->listMailboxes('', '*', null, ['SUBSCRIBED']);
if ($sub === false) fail('list-subscribed-new', $imap);
sort($sub);
out('subscribed-new-user', $sub);
// On a user's first login Roundcube (create_default_folders) subscribes
// INBOX and the special folders that exist.
foreach (['INBOX', 'Drafts', 'Sent', 'Junk', 'Trash'] as $f) {
    if (!in_array($f, $sub) && !$imap->subscribe($f)) fail("subscribe $f", $imap);
}
$sub = $imap->listMailboxes('', '*', null, ['SUBSCRIBED']);
if ($sub === false) fail('list-subscribed', $imap);
sort($sub);
out('list-subscribed', $sub);
$lsub = $imap->listSubscribed('', '*');
if ($lsub === false) fail('lsub', $imap);
sort($lsub);
out('lsub', $lsub);
$imap->data['LIST'] = [];
$special = $imap->listMailboxes('', '*', ['SUBSCRIBED'], ['SPECIAL-USE']);
if ($special === false) fail('list-special-use', $imap);
$uses = [];
foreach ($imap->data['LIST'] as $name => $attrs) {
    foreach ($attrs as $a) {
        if (in_array(strtolower($a), ['\\sent', '\\trash', '\\drafts', '\\junk', '\\archive', '\\all', '\\flagged'])) {
            $uses[$name] = $a;
        }
    }
}
ksort($uses);
out('special-use', $uses);

// ---- the message list: SELECT, sorted, threaded, one page of headers ----
if (!$imap->select('INBOX')) fail('select', $imap);
out('select', ['exists' => (int) $imap->data['EXISTS'], 'uidvalidity' => (int) $imap->data['UIDVALIDITY'],
    'readwrite' => !empty($imap->data['READ-WRITE'])]);
foreach (['DATE', 'ARRIVAL', 'FROM', 'SUBJECT', 'SIZE'] as $field) {
    $r = $imap->sort('INBOX', $field, 'ALL', true, 'UTF-8');
    if ($r->is_error()) fail("sort-$field", $imap);
    out('sort-' . strtolower($field), array_map('intval', $r->get()));
}
$t = $imap->thread('INBOX', 'REFERENCES', '', true, 'UTF-8');
if ($t->is_error()) fail('thread', $imap);
out('thread', ['tree' => $t->get_tree(), 'threads' => $t->count(), 'messages' => $t->count_messages()]);
// Without SORT Roundcube orders by a header it fetches for every message.
$idx = $imap->fetchHeaderIndex('INBOX', '1:*', 'DATE', false, true);
if ($idx === false) fail('fetch-header-index', $imap);
asort($idx);
out('index-date', array_map('intval', array_keys($idx)));
$unseen = $imap->search('INBOX', 'ALL UNSEEN', true);
if ($unseen->is_error()) fail('search-unseen', $imap);
out('unseen', array_map('intval', $unseen->get()));
// One page of the list, by UID as rcube_imap::fetch_headers does.
out('page', listRows($imap, 'INBOX', '1:*'));
$q = $imap->getQuota();
if ($q === false) fail('quota', $imap);
out('quota', ['used' => $q['used'] ?? null, 'total' => $q['total'] ?? null]);

// ---- reading a message: its structure, the text part and the attachment ----
$uid = (int) getenv('RC_READ_UID');
$st = $imap->getStructure('INBOX', $uid, true);
if (!$st) fail('structure', $imap);
$text = rcube_imap_generic::getStructurePartData($st, '1');
$att = rcube_imap_generic::getStructurePartData($st, '2');
$body = $imap->handlePartBody('INBOX', $uid, true, '1', $text['encoding']);
if ($body === false) fail('body-text', $imap);
$file = $imap->handlePartBody('INBOX', $uid, true, '2', $att['encoding']);
if ($file === false) fail('body-attachment', $imap);
out('read', ['text_type' => $text['type'] . '/' . $text['subtype'], 'text_charset' => $text['charset'] ?? '',
    'text' => rcube_charset::convert($body, $text['charset'] ?? 'US-ASCII'),
    'att_type' => $att['type'] . '/' . $att['subtype'], 'att_encoding' => $att['encoding'],
    'att_sha256' => hash('sha256', $file), 'att_len' => strlen($file)]);
$after = listRows($imap, 'INBOX', $uid);
out('flags-after-peek', $after[0]['flags']);
// Roundcube reads with BODY.PEEK and then marks the message read itself.
if (!$imap->flag('INBOX', [$uid], 'SEEN')) fail('flag-read', $imap);

// ---- flags, delete, move to Trash ----
$f = getenv('RC_FLAG_UID');
if (!$imap->flag('INBOX', [$f], 'FLAGGED')) fail('flag', $imap);
if (!$imap->flag('INBOX', [$f], 'SEEN')) fail('flag-seen', $imap);
$u = getenv('RC_UNSEEN_UID');
if (!$imap->unflag('INBOX', [$u], 'SEEN')) fail('unflag', $imap);
if (!$imap->flag('INBOX', [$u], 'FORWARDED')) fail('flag-forwarded', $imap);
$m = explode(',', getenv('RC_MOVE_UIDS'));
if (!$imap->move($m, 'INBOX', 'Trash')) fail('move', $imap);
out('moved', ['copyuid' => $imap->data['COPYUID'] ?? null]);
$d = getenv('RC_DELETE_UID');
if (!$imap->flag('INBOX', [$d], 'DELETED')) fail('flag-deleted', $imap);
if (!$imap->expunge('INBOX', [$d])) fail('expunge', $imap);
$left = listRows($imap, 'INBOX', '1:*');
out('inbox-after', $left);
out('trash-count', $imap->countMessages('Trash'));

// ---- sending: the copy Roundcube saves to Sent ----
$msg = "From: " . getenv('RC_USER') . "\r\nTo: Bob <bob@example.org>\r\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n"
    . "Date: Mon, 08 Jan 2024 10:00:00 +0100\r\nMessage-ID: <sent-1@roundcube.test>\r\nMIME-Version: 1.0\r\n"
    . "Content-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nViele Grüße aus Roundcube.\r\n";
$sentUID = $imap->append('Sent', $msg, ['SEEN']);
if (!$sentUID) fail('append', $imap);
$sent = $imap->handlePartBody('Sent', $sentUID, true, '');
out('sent', ['uid' => (int) $sentUID, 'same_bytes' => $sent === $msg, 'count' => $imap->countMessages('Sent'),
    'rows' => listRows($imap, 'Sent', '1:*')]);
$q = $imap->getQuota();
out('quota-after', ['used' => $q['used'] ?? null, 'total' => $q['total'] ?? null]);
$imap->closeConnection();

// ---- another node, over STARTTLS: what this session did is there ----
$other = session(getenv('RC_STARTTLS_PORT'), 'tls');
$rows = listRows($other, 'INBOX', '1:*');
$trash = listRows($other, 'Trash', '1:*');
out('other-node', ['inbox' => $rows, 'trash' => $trash, 'unseen' => $other->countUnseen('INBOX')]);
$other->closeConnection();
echo "DONE\n";
