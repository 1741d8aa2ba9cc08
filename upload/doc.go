// Package upload builds streaming multipart/form-data bodies: files by path,
// readers that can be reopened, and plain form fields, in any mix.
//
// A [Body] never holds a file in memory: each attempt reads the parts from
// their sources as the transport sends them, so memory stays flat whatever
// the size. Its exact Content-Length is known before sending when every
// part's size is, so servers that refuse chunked uploads accept it. And it
// is replayable: a retry or a replay after a token refresh reopens every
// part and sends the body again from byte 0.
//
// A missing or unreadable file is reported by [Builder.Build], naming the
// file, before any byte is sent.
package upload
