#!/usr/bin/perl
# Benchmark reference: the cost of starting perl under mod_cgid, nothing else.
my $length = $ENV{CONTENT_LENGTH} || 0;
read(STDIN, my $body, $length) if $length;
print "Status: 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n\r\n{\"status\":\"true\"}";
