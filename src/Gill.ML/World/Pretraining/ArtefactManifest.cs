using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using Gill.ML.Serialization;

namespace Gill.ML.World.Pretraining;

/// <summary>
/// The SHA-256 manifest of one cached artefact folder (<c>gill-artefact.json</c>): the cache key of the options that
/// made it, the hash of every file, and the phase's figures. A folder whose files no longer match is rebuilt.
/// </summary>
internal static class ArtefactManifest
{
    public const string FileName = "gill-artefact.json";

    internal static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>Hashes every file of <paramref name="folder"/> (recursively, except the manifest) and writes the manifest.</summary>
    public static void Write(string folder, string key, JsonNode? metrics, double seconds)
    {
        var files = new JsonObject();
        foreach (var (rel, hash) in HashFiles(folder)) files[rel] = hash;
        var root = new JsonObject
        {
            ["format"] = "gill-world-artefact/1", ["key"] = key, ["train_seconds"] = seconds,
            ["created_utc"] = DateTime.UtcNow.ToString("O"), ["files"] = files, ["metrics"] = metrics?.DeepClone(),
        };
        AtomicFile.WriteAllText(Path.Combine(folder, FileName), root.ToJsonString(Json));
    }

    /// <summary>
    /// Checks a cached folder. Returns the manifest when the key matches and every listed file has its hash; otherwise
    /// null and a reason (missing, other options, a file missing or with another SHA-256).
    /// </summary>
    public static JsonObject? Check(string folder, string key, out string reason)
    {
        var path = Path.Combine(folder, FileName);
        if (!File.Exists(path)) { reason = Directory.Exists(folder) ? "no manifest (incomplete earlier run)" : "not built yet"; return null; }
        JsonObject? root;
        try { root = JsonNode.Parse(File.ReadAllText(path)) as JsonObject; }
        catch (JsonException e) { reason = $"manifest '{path}' is unreadable ({e.Message})"; return null; }
        if (root is null || root["files"] is not JsonObject files) { reason = $"manifest '{path}' is malformed"; return null; }
        if (root["key"]?.GetValue<string>() != key) { reason = "built with other options"; return null; }
        if (files.Count == 0) { reason = $"manifest '{path}' lists no files"; return null; }
        foreach (var (rel, node) in files)
        {
            var file = Path.Combine(folder, rel);
            if (!File.Exists(file)) { reason = $"file '{file}' is missing"; return null; }
            var expected = node?.GetValue<string>() ?? "";
            var actual = HashFile(file);
            if (!string.Equals(expected, actual, StringComparison.OrdinalIgnoreCase))
            {
                reason = $"file '{file}' has SHA-256 {actual}, the manifest says {expected} (corrupted)";
                return null;
            }
        }
        reason = "";
        return root;
    }

    /// <summary>SHA-256 of the manifest file itself (a dependency key for later phases).</summary>
    public static string ManifestHash(string folder) => HashFile(Path.Combine(folder, FileName));

    private static IEnumerable<(string Rel, string Hash)> HashFiles(string folder) =>
        Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(folder, f).Replace('\\', '/'))
            .Where(r => r != FileName && !r.EndsWith(".tmp", StringComparison.Ordinal))
            .OrderBy(r => r, StringComparer.Ordinal)
            .Select(r => (r, HashFile(Path.Combine(folder, r))));

    private static string HashFile(string path)
    {
        using var s = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(s));
    }
}
