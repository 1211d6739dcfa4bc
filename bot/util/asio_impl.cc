// The one translation unit that compiles Boost.Asio (BOOST_ASIO_SEPARATE_COMPILATION),
// so the rest of the bot includes only declarations and builds faster on small machines.
#include <boost/asio/impl/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
