// RESP codec: encoding and incremental decoding (no I/O).
#include <keysem/redis/detail/resp.hpp>

#include <doctest/doctest.h>

using namespace keysem::redis::detail;

TEST_CASE("resp: a command encodes as an array of bulk strings, binary-safe") {
  CHECK(encode_command({"SET", "k", "v"}) == "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n");
  const std::string binary("a\0b\r\n", 5);
  static constexpr char expected[] = "*2\r\n$3\r\nGET\r\n$5\r\na\0b\r\n\r\n";
  CHECK(encode_command({"GET", binary}) == std::string(expected, sizeof expected - 1));
}

TEST_CASE("resp: replies split at any byte decode once complete, in order") {
  const std::string wire = "*3\r\n:1\r\n$5\r\nhello\r\n*1\r\n:-7\r\n+OK\r\n-NOSCRIPT no\r\n$-1\r\n";
  for (std::size_t cut = 0; cut <= wire.size(); ++cut) {
    reply_decoder decoder;
    std::vector<reply> got;
    decoder.feed(std::string_view(wire).substr(0, cut));
    while (auto r = decoder.next()) got.push_back(std::move(*r));
    decoder.feed(std::string_view(wire).substr(cut));
    while (auto r = decoder.next()) got.push_back(std::move(*r));
    REQUIRE(got.size() == 4);
    REQUIRE(got[0].type == reply::kind::array);
    REQUIRE(got[0].elements.size() == 3);
    CHECK(got[0].elements[0].integer == 1);
    CHECK(got[0].elements[1].str == "hello");
    CHECK(got[0].elements[2].elements.at(0).integer == -7);
    CHECK(got[1].type == reply::kind::status);
    CHECK(got[1].str == "OK");
    CHECK(got[2].is_error());
    CHECK(got[2].str == "NOSCRIPT no");
    CHECK(got[3].type == reply::kind::nil);
    CHECK_FALSE(decoder.failed());
  }
}

TEST_CASE("resp: malformed input fails the decoder and yields nothing more") {
  reply_decoder decoder;
  decoder.feed("?what\r\n");
  CHECK_FALSE(decoder.next().has_value());
  CHECK(decoder.failed());
  decoder.feed("+OK\r\n");
  CHECK_FALSE(decoder.next().has_value());
}
