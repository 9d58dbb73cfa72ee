package denis.neo4j;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.CountDownLatch;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.BoltConnectorInternalSettings;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.io.ByteUnit;

/**
 * A real Neo4j community DBMS for the Denis test suite, serving Bolt on 127.0.0.1 only.
 *
 * <p>Usage: {@code java -Xmx512m -jar neo4j-launcher.jar PORT DATA_DIR}. Authentication is
 * disabled (connect with no auth). The store lives in DATA_DIR, so a launcher restarted on the
 * same directory (even after SIGKILL: Neo4j recovers from its transaction log) has the same
 * data. Prints {@code READY bolt://127.0.0.1:PORT} on stdout once the default database is
 * available and the Bolt port accepts connections; SIGTERM shuts the DBMS down cleanly and
 * prints {@code STOPPED}.
 *
 * <p>{@code --warm-up DATA_DIR} starts on a free port, waits until ready and exits: run under
 * {@code -XX:ArchiveClassesAtExit} it records the class-data archive that shortens later
 * starts by a second or two ({@code make neo4j-launcher} does this).
 */
public final class Launcher {
    private static final Duration START_TIMEOUT = Duration.ofMinutes(3);

    private Launcher() {}

    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: neo4j-launcher (PORT | --warm-up) DATA_DIR");
            System.exit(2);
        }
        boolean warmUp = args[0].equals("--warm-up");
        int port = warmUp ? freePort() : Integer.parseInt(args[0]);
        Path home = Path.of(args[1]).toAbsolutePath();
        long started = System.nanoTime();

        DatabaseManagementService dbms = new DatabaseManagementServiceBuilder(home)
                .setConfig(BoltConnector.enabled, true)
                .setConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", port))
                .setConfig(BoltConnector.advertised_address, new SocketAddress("127.0.0.1", port))
                .setConfig(BoltConnector.encryption_level, BoltConnector.EncryptionLevel.DISABLED)
                .setConfig(GraphDatabaseSettings.auth_enabled, false)
                .setConfig(GraphDatabaseSettings.udc_enabled, false) // no usage reports from tests
                // Keep a test server small: a tiny page cache, no 250 MB preallocated tx logs.
                .setConfig(GraphDatabaseSettings.pagecache_memory, ByteUnit.mebiBytes(64))
                .setConfig(GraphDatabaseSettings.memory_transaction_global_max_size, ByteUnit.mebiBytes(128))
                .setConfig(GraphDatabaseSettings.logical_log_rotation_threshold, ByteUnit.mebiBytes(1))
                .setConfig(GraphDatabaseSettings.preallocate_logical_logs, false)
                .setConfig(GraphDatabaseSettings.preallocate_store_files, false)
                .setConfig(GraphDatabaseSettings.keep_logical_logs, "2 files")
                // Bolt waits 5 s twice on shutdown by default; a test server need not.
                .setConfig(BoltConnectorInternalSettings.thread_pool_shutdown_wait_time, Duration.ofSeconds(1))
                .setConfig(BoltConnectorInternalSettings.connection_shutdown_wait_time, Duration.ofSeconds(1))
                .build();

        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                dbms.shutdown();
                System.out.println("STOPPED");
                System.out.flush();
            } finally {
                stopped.countDown();
            }
        }, "neo4j-launcher-shutdown"));

        long deadline = System.nanoTime() + START_TIMEOUT.toNanos();
        if (!dbms.database(GraphDatabaseSettings.DEFAULT_DATABASE_NAME)
                .isAvailable(START_TIMEOUT.toMillis())) {
            System.err.println("the default database did not become available");
            System.exit(1);
        }
        waitForBolt(port, deadline);
        long ms = Duration.ofNanos(System.nanoTime() - started).toMillis();
        System.out.println("READY bolt://127.0.0.1:" + port + " in " + ms + " ms");
        System.out.flush();
        if (warmUp) {
            System.exit(0);
        }
        stopped.await();
    }

    private static int freePort() throws IOException {
        try (ServerSocket socket = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            return socket.getLocalPort();
        }
    }

    private static void waitForBolt(int port, long deadlineNanos) throws InterruptedException {
        while (true) {
            try (Socket socket = new Socket()) {
                socket.connect(new InetSocketAddress("127.0.0.1", port), 200);
                return;
            } catch (IOException e) {
                if (System.nanoTime() > deadlineNanos) {
                    System.err.println("Bolt does not accept connections on port " + port + ": " + e);
                    System.exit(1);
                }
                Thread.sleep(20);
            }
        }
    }
}
