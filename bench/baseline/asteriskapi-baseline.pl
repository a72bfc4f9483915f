#!/usr/bin/perl
# Benchmark baseline, not part of the product: a minimal Perl CGI doing per request what
# the legacy asteriskapi.pl did (CGI.pm, JSON::PP, a raw AMI socket): read the JSON body,
# check the api-key against the keys file, AMI Login + Originate (Async) + Logoff, print
# the legacy JSON reply. It leaves out what the gateway adds (phone number intelligence,
# ANI rotation, double-click and idempotency guards, input checks), so its latency is a
# lower bound for the legacy script. AMI and keys file come from $CALLEXCHANGE_CONFIG.
use strict;
use warnings;
use CGI;
use JSON::PP;
use IO::Socket::INET;
use Digest::SHA qw(sha256_hex);

my $json = JSON::PP->new->canonical;

sub reply {
    my ($q, $status, $body) = @_;
    print $q->header(-type => 'application/json', -charset => 'utf-8', -status => $status);
    print $json->encode($body);
    exit 0;
}

sub read_ini {
    my ($path) = @_;
    my (%ini, $section);
    open(my $fh, '<', $path) or die "cannot read $path: $!";
    while (my $line = <$fh>) {
        next if $line =~ /^\s*(?:[#;]|$)/;
        if ($line =~ /^\s*\[\s*([^\]]+?)\s*\]/) { $section = lc $1; next; }
        if ($line =~ /^\s*([^=:]+?)\s*[=:]\s*(.*?)\s*$/) { $ini{$section}{lc $1} = $2; }
    }
    close $fh;
    return \%ini;
}

# One AMI message: header lines up to the blank line.
sub ami_read {
    my ($sock) = @_;
    my %msg;
    while (defined(my $line = <$sock>)) {
        $line =~ s/\r?\n$//;
        last if $line eq '' && %msg;
        next if $line eq '';
        my ($k, $v) = split /:\s*/, $line, 2;
        $msg{$k} //= $v;
    }
    return \%msg;
}

sub ami_action {
    my ($sock, $id, @pairs) = @_;
    my $text = '';
    while (my ($k, $v) = splice(@pairs, 0, 2)) { $text .= "$k: $v\r\n"; }
    print $sock $text . "ActionID: $id\r\n\r\n";
    while (1) {    # skip events until our reply
        my $msg = ami_read($sock);
        return $msg if !%$msg || (($msg->{ActionID} // '') eq $id && exists $msg->{Response});
    }
}

my $q = CGI->new;
my $ini = read_ini($ENV{CALLEXCHANGE_CONFIG} // '/etc/callexchange/callexchange.ini');
my %p;
my $data = eval { decode_json($q->param('POSTDATA') // '{}') } // {};
for my $k (keys %$data) { (my $n = lc $k) =~ s/^\s+|\s+$//g; $p{$n} = $data->{$k}; }
my $key = $ENV{HTTP_API_KEY} // $p{'api-key'} // $p{api_key};
my ($ext, $dest) = ($p{extension} // '', $p{destination} // '');
my $fail = "We fail on making a call. caller : $ext, callee : $dest";

if (!defined $key || $ext eq '' || $dest eq '') {
    reply($q, '400 Bad Request', {status => '400 Bad Request', icon => 'error',
        error => 'Missing parameters: api-key, extension, or destination', message => $fail});
}
my $digest = sha256_hex($key);
open(my $keys, '<', $ini->{auth}{keys_file} // '/etc/callexchange/api-keys') or die;
my $known = grep { chomp; ((split /\t/)[1] // '') eq $digest } <$keys>;
close $keys;
reply($q, '401 Unauthorized', {status => '401 Unauthorized', icon => 'error',
    error => 'Invalid api-key', message => $fail}) unless $known;

my $dialer = ($p{call_in_out} // '') =~ /^(?:1|true|yes|on)$/i;
my $caller_id = (split /\s*,\s*/, $ini->{ani}{default} // '12125550100')[0];
my $sock = IO::Socket::INET->new(PeerAddr => $ini->{ami}{host} // '127.0.0.1',
    PeerPort => $ini->{ami}{port} // 5038, Proto => 'tcp',
    Timeout => $ini->{ami}{connect_timeout} // 3);
reply($q, '503 Service Unavailable', {status => '503 Service Unavailable', icon => 'error',
    error => 'Asterisk is unreachable', message => $fail}) unless $sock;
my $banner = <$sock>;
my $login = ami_action($sock, 'login-1', Action => 'Login', Username => $ini->{ami}{username},
    Secret => $ini->{ami}{secret}, Events => 'off');
my $id = time() . '.' . int(rand(1e9));
my $orig = ami_action($sock, 'originate-1', Action => 'Originate',
    Channel => $dialer ? "Local/$dest\@callexchange-outbound" : "PJSIP/$ext",
    Context => $dialer ? 'callexchange-agent' : 'callexchange-outbound',
    Exten => $dialer ? $ext : $dest, Priority => 1, Timeout => 30000,
    CallerID => $caller_id, ChannelId => $id, Async => 'true',
    Variable => "CX_PITCH=" . ($p{voice_pitch} // 1));
ami_action($sock, 'logoff-1', Action => 'Logoff');
close $sock;
if (($login->{Response} // '') ne 'Success' || ($orig->{Response} // '') ne 'Success') {
    reply($q, '502 Bad Gateway', {status => '502 Bad Gateway', icon => 'error',
        error => 'Asterisk refused the call', message => $fail});
}
my ($icon, $cc) = $dest =~ /^49/ ? ('DE', 49) : ('US', 1);
reply($q, '200 OK', {status => 'true', icon => $icon, message => 'Success making a call',
    phone_valid => 'yes', country_code => $cc, carrier => '', caller_id => $caller_id,
    check_spam => 'true', uniqueid => $id});
