// The request generator of `etcdctl check perf` (etcd 3.4's etcdctl/ctlv3/command/check.go)
// alone, against an ideal server that answers every request at once: a rate.Limiter of the
// load's limit with a burst of 1 feeds a channel that the load's clients drain. What it
// reaches is the most check perf can measure on this machine, whatever the server.
//
// `cargo xtask bench cluster` builds it with Debian's Go and golang.org/x/time (the Go that
// Debian's etcdctl 3.4 is built with: the timers behind rate.Limiter are the same) and runs
// it before each check perf load:
//
//	checkperf_generator LIMIT CLIENTS SECONDS
//
// prints the requests per second it generated.
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: checkperf_generator LIMIT CLIENTS SECONDS")
		os.Exit(2)
	}
	limit, err1 := strconv.Atoi(os.Args[1])
	clients, err2 := strconv.Atoi(os.Args[2])
	seconds, err3 := strconv.Atoi(os.Args[3])
	if err1 != nil || err2 != nil || err3 != nil || limit <= 0 || clients <= 0 || seconds <= 0 {
		fmt.Fprintln(os.Stderr, "checkperf_generator: LIMIT, CLIENTS and SECONDS are positive integers")
		os.Exit(2)
	}
	// As check perf: the limiter, a channel as deep as there are clients, one goroutine per
	// client taking requests from it.
	requests := make(chan struct{}, clients)
	limiter := rate.NewLimiter(rate.Limit(limit), 1)
	var done int64
	var wg sync.WaitGroup
	wg.Add(clients)
	for i := 0; i < clients; i++ {
		go func() {
			defer wg.Done()
			for range requests {
				atomic.AddInt64(&done, 1)
			}
		}()
	}
	start := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds)*time.Second)
		defer cancel()
		for limiter.Wait(ctx) == nil {
			requests <- struct{}{}
		}
		close(requests)
	}()
	wg.Wait()
	fmt.Printf("%.0f\n", float64(atomic.LoadInt64(&done))/time.Since(start).Seconds())
}
