using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Security.Cryptography;
using System.Text;
using Gill.ML.Modules;
using Gill.ML.Stages.VisualFeatures;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Retrieval;

/// <summary>Element type of the vectors stored in a retrieval index.</summary>
public enum GillIndexDType
{
    /// <summary>32-bit floats.</summary>
    Float32 = 0,

    /// <summary>16-bit floats (half the file size and bytes scanned; scores are computed in float32).</summary>
    Float16 = 1,
}

/// <summary>One retrieval hit.</summary>
/// <param name="Index">Row of the gallery (0-based).</param>
/// <param name="Id">The image's id or path as stored in the index.</param>
/// <param name="Score">Cosine similarity between the query and the image's normalised W_i2t embedding.</param>
public sealed record GillRetrievalHit(long Index, string Id, float Score);

/// <summary>
/// A retrieval gallery file: normalised image-side retrieval embeddings v = W_i2t(visual feature)/‖·‖ of a set of
/// images, with their ids, queried by exact top-k cosine similarity. The file is memory-mapped: the vectors are never
/// copied into managed memory, and they are scanned in chunks.
/// </summary>
/// <remarks>
/// Layout (little-endian): a 128-byte header — magic <c>GILLIDX\0</c>, int32 version (1), int32 dim, int64 count,
/// int32 dtype (0 = fp32, 1 = fp16), int32 reserved, 32-byte model hash (SHA-256 of W_i2t's weight and bias as float32
/// plus the visual encoder's name and feature size), int64 ids offset, int64 file length, 32-byte SHA-256 of the
/// payload (everything after the header) — then <c>count × dim</c> vectors at byte 128, then the ids: int64 offsets
/// [count + 1] relative to the start of the UTF-8 id bytes, followed by those bytes.
/// </remarks>
public sealed class GillRetrievalIndex : IDisposable
{
    /// <summary>File magic.</summary>
    public static ReadOnlySpan<byte> Magic => "GILLIDX\0"u8;

    /// <summary>Current format version.</summary>
    public const int FormatVersion = 1;

    /// <summary>Size of the header in bytes (also the offset of the vectors).</summary>
    public const int HeaderSize = 128;

    private readonly MemoryMappedFile _file;
    private readonly MemoryMappedViewAccessor _ids;
    private readonly Tensor _vectors;
    private readonly long _idsOffset;
    private bool _disposed;

    private GillRetrievalIndex(string path, int dim, long count, GillIndexDType dtype, byte[] modelHash, long idsOffset, long fileLength)
    {
        Path = path;
        Dimension = dim;
        Count = count;
        DType = dtype;
        ModelHash = modelHash;
        _idsOffset = idsOffset;
        _file = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        _ids = _file.CreateViewAccessor(idsOffset, fileLength - idsOffset, MemoryMappedFileAccess.Read);
        int elem = dtype == GillIndexDType.Float16 ? 2 : 4;
        long elements = (HeaderSize + count * dim * (long)elem) / elem;
        using var scope = torch.NewDisposeScope();
        var all = torch.from_file(path, shared: false, size: elements, dtype: dtype == GillIndexDType.Float16 ? ScalarType.Float16 : ScalarType.Float32);
        _vectors = all.narrow(0, HeaderSize / elem, count * dim).view(count, dim).DetachFromDisposeScope();
    }

    /// <summary>The file.</summary>
    public string Path { get; }

    /// <summary>Vector length (the retrieval embedding size p).</summary>
    public int Dimension { get; }

    /// <summary>Number of images.</summary>
    public long Count { get; }

    /// <summary>Stored element type.</summary>
    public GillIndexDType DType { get; }

    /// <summary>SHA-256 of the retrieval projection and encoder the vectors were made with (see <see cref="ComputeModelHash"/>).</summary>
    public byte[] ModelHash { get; }

    /// <summary>Rows scanned per matrix product (bounds the temporary score matrix).</summary>
    public int ChunkRows { get; set; } = 65536;

    /// <summary>
    /// Opens an index. Throws <see cref="InvalidDataException"/> for a file that is not an index, has another version,
    /// is truncated or whose checksum does not match (when <paramref name="verifyChecksum"/>), and
    /// <see cref="GillIndexModelMismatchException"/> when <paramref name="expectedModelHash"/> is given and differs.
    /// </summary>
    /// <param name="path">Index file.</param>
    /// <param name="expectedModelHash">Hash of the model that will query the index (<see cref="ComputeModelHash"/>); null skips the check.</param>
    /// <param name="verifyChecksum">Hash the whole payload once (reads the file; skip for very large trusted files).</param>
    public static GillRetrievalIndex Open(string path, byte[]? expectedModelHash = null, bool verifyChecksum = true)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Retrieval index '{path}' does not exist.", path);
        var header = new byte[HeaderSize];
        long fileLength;
        byte[] checksum;
        using (var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read))
        {
            fileLength = fs.Length;
            if (fs.Read(header, 0, HeaderSize) != HeaderSize)
                throw new InvalidDataException($"Retrieval index '{path}' is shorter than its {HeaderSize}-byte header ({fileLength} bytes).");
            if (!header.AsSpan(0, 8).SequenceEqual(Magic))
                throw new InvalidDataException($"'{path}' is not a GILL retrieval index (bad magic).");
            checksum = header.AsSpan(80, 32).ToArray();
            if (verifyChecksum)
            {
                fs.Position = HeaderSize;
                var actual = SHA256.HashData(fs);
                if (!actual.AsSpan().SequenceEqual(checksum))
                    throw new InvalidDataException($"Retrieval index '{path}' is corrupted: the SHA-256 of its payload does not match the header.");
            }
        }
        int version = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(8));
        if (version != FormatVersion)
            throw new InvalidDataException($"Retrieval index '{path}' has format version {version}; this library reads version {FormatVersion}.");
        int dim = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(12));
        long count = BinaryPrimitives.ReadInt64LittleEndian(header.AsSpan(16));
        int dtypeCode = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(24));
        var hash = header.AsSpan(32, 32).ToArray();
        long idsOffset = BinaryPrimitives.ReadInt64LittleEndian(header.AsSpan(64));
        long declaredLength = BinaryPrimitives.ReadInt64LittleEndian(header.AsSpan(72));
        if (dtypeCode is not (0 or 1))
            throw new InvalidDataException($"Retrieval index '{path}' declares unknown dtype code {dtypeCode}.");
        var dtype = (GillIndexDType)dtypeCode;
        int elem = dtype == GillIndexDType.Float16 ? 2 : 4;
        if (dim <= 0 || count < 0 || idsOffset != HeaderSize + count * dim * (long)elem || declaredLength != fileLength
            || idsOffset + (count + 1) * 8 > fileLength)
            throw new InvalidDataException($"Retrieval index '{path}' is truncated or inconsistent (dim {dim}, count {count}, {fileLength} bytes on disk, {declaredLength} declared).");
        if (count == 0)
            throw new InvalidDataException($"Retrieval index '{path}' holds no images (empty gallery).");
        if (expectedModelHash is not null && !expectedModelHash.AsSpan().SequenceEqual(hash))
            throw new GillIndexModelMismatchException(path, Convert.ToHexString(hash), Convert.ToHexString(expectedModelHash));
        return new GillRetrievalIndex(path, dim, count, dtype, hash, idsOffset, fileLength);
    }

    /// <summary>The id (path) of row <paramref name="index"/>.</summary>
    public string GetId(long index)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (index < 0 || index >= Count) throw new ArgumentOutOfRangeException(nameof(index), index, $"The gallery has {Count} images.");
        long start = _ids.ReadInt64(index * 8), end = _ids.ReadInt64((index + 1) * 8);
        long bytesAt = (Count + 1) * 8;
        var buffer = new byte[end - start];
        _ids.ReadArray(bytesAt + start, buffer, 0, buffer.Length);
        return Encoding.UTF8.GetString(buffer);
    }

    /// <summary>Row <paramref name="index"/> as float32 [dim] (a copy).</summary>
    public Tensor GetVector(long index)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (index < 0 || index >= Count) throw new ArgumentOutOfRangeException(nameof(index), index, $"The gallery has {Count} images.");
        return _vectors[index].to(ScalarType.Float32).clone();
    }

    /// <summary>The row of the first image whose id equals <paramref name="id"/>, or −1.</summary>
    public long FindId(string id)
    {
        for (long i = 0; i < Count; i++) if (GetId(i) == id) return i;
        return -1;
    }

    /// <summary>
    /// Exact top-k by cosine similarity for each query row [Q, dim] (normalised here), scanning the memory-mapped vectors
    /// chunk by chunk with one matrix product per chunk. Rows in <paramref name="exclude"/> (e.g. images already shown in
    /// the conversation) are never returned. Returns one list per query, best first.
    /// </summary>
    public IReadOnlyList<IReadOnlyList<GillRetrievalHit>> Search(Tensor queries, int k, IReadOnlyCollection<long>? exclude = null)
    {
        var (scores, indices) = SearchRaw(queries, k, exclude);
        var result = new List<IReadOnlyList<GillRetrievalHit>>(scores.GetLength(0));
        for (int q = 0; q < scores.GetLength(0); q++)
        {
            var hits = new List<GillRetrievalHit>();
            for (int j = 0; j < scores.GetLength(1); j++)
                if (indices[q, j] >= 0) hits.Add(new GillRetrievalHit(indices[q, j], GetId(indices[q, j]), scores[q, j]));
            result.Add(hits);
        }
        return result;
    }

    /// <summary>Top-k scores and rows [Q, k] without reading ids (rows of −1 when fewer than k images are eligible).</summary>
    public (float[,] Scores, long[,] Indices) SearchRaw(Tensor queries, int k, IReadOnlyCollection<long>? exclude = null)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(queries);
        if (k <= 0) throw new ArgumentOutOfRangeException(nameof(k), k, "k must be positive.");
        if (queries.dim() == 1) queries = queries.unsqueeze(0);
        if (queries.dim() != 2 || queries.shape[1] != Dimension)
            throw new ArgumentException($"Queries must be [Q, {Dimension}] (the index's dimension), got {Serialization.SafeTensors.FormatShape(queries.shape)}.", nameof(queries));
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var q = queries.to(ScalarType.Float32).cpu();
        q = q / q.norm(-1, keepdim: true).clamp_min(1e-12);
        var qt = q.t().contiguous(); // [dim, Q]
        long nq = q.shape[0];
        int kk = (int)Math.Min(k, Count);
        var excluded = exclude is null ? new HashSet<long>() : new HashSet<long>(exclude);
        // fp16 rows are widened into one reused float32 buffer (CPU half matmuls are slow).
        var buffer = _vectors.dtype == ScalarType.Float32 ? null : torch.empty(new long[] { Math.Min(ChunkRows, Count), Dimension }, ScalarType.Float32);
        Tensor? bestScores = null, bestIdx = null;
        for (long start = 0; start < Count; start += ChunkRows)
        {
            using var chunkScope = torch.NewDisposeScope();
            long n = Math.Min(ChunkRows, Count - start);
            var chunk = _vectors.narrow(0, start, n);
            if (buffer is not null) chunk = buffer.narrow(0, 0, n).copy_(chunk);
            var s = torch.matmul(chunk, qt); // [n, Q]: one pass over the chunk (measured faster than [Q, n] for batched queries)
            var inChunk = excluded.Where(e => e >= start && e < start + n).Select(e => e - start).ToArray();
            if (inChunk.Length > 0) s.IndexFillInPlace(0, torch.tensor(inChunk), float.NegativeInfinity);
            int kc = (int)Math.Min(kk, n);
            var (valsT, idxT) = s.topk(kc, dim: 0);
            var vals = valsT.t();
            var idx = idxT.t() + start;
            if (bestScores is null)
            {
                bestScores = vals;
                bestIdx = idx;
            }
            else
            {
                var allS = torch.cat(new[] { bestScores, vals }, 1);
                var allI = torch.cat(new[] { bestIdx!, idx }, 1);
                var (v2, pos) = allS.topk(Math.Min(kk, (int)allS.shape[1]), dim: 1);
                bestScores = v2;
                bestIdx = allI.gather(1, pos);
            }
            bestScores = bestScores.MoveToOuterDisposeScope();
            bestIdx = bestIdx!.MoveToOuterDisposeScope();
        }
        var scoreArr = bestScores!.contiguous().data<float>().ToArray();
        var idxArr = bestIdx!.contiguous().data<long>().ToArray();
        int cols = (int)bestScores.shape[1];
        var scores = new float[nq, k];
        var indices = new long[nq, k];
        for (int i = 0; i < nq; i++)
            for (int j = 0; j < k; j++)
            {
                bool ok = j < cols && !float.IsNegativeInfinity(scoreArr[i * cols + j]);
                scores[i, j] = ok ? scoreArr[i * cols + j] : float.NaN;
                indices[i, j] = ok ? idxArr[i * cols + j] : -1;
            }
        return (scores, indices);
    }

    /// <summary>
    /// SHA-256 identifying the image-side retrieval space: W_i2t's weight and bias (float32, little-endian) and the
    /// visual encoder's name and feature size. An index built with another model (or encoder) has another hash.
    /// </summary>
    public static byte[] ComputeModelHash(GillCoreModel model, IVisualEncoder? encoder)
    {
        ArgumentNullException.ThrowIfNull(model);
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        using var scope = torch.NewDisposeScope();
        foreach (var (name, p) in model.Heads.named_parameters())
        {
            if (!name.StartsWith("visual_fc.", StringComparison.Ordinal)) continue;
            sha.AppendData(Encoding.UTF8.GetBytes(name));
            var data = p.detach().to(ScalarType.Float32).cpu().contiguous().data<float>().ToArray();
            var bytes = new byte[data.Length * 4];
            Buffer.BlockCopy(data, 0, bytes, 0, bytes.Length);
            sha.AppendData(bytes);
        }
        sha.AppendData(Encoding.UTF8.GetBytes($"{encoder?.Name ?? "features"}|{encoder?.FeatureSize ?? model.Config.VisualHiddenSize}"));
        return sha.GetHashAndReset();
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _vectors.Dispose();
        _ids.Dispose();
        _file.Dispose();
    }
}

/// <summary>The index was built with another retrieval projection or visual encoder than the model querying it.</summary>
public sealed class GillIndexModelMismatchException : IOException
{
    /// <summary>Creates the exception.</summary>
    public GillIndexModelMismatchException(string path, string indexHash, string modelHash)
        : base($"Retrieval index '{path}' was built with another model (model hash {indexHash[..16]}…, this model {modelHash[..16]}…); rebuild it with 'gill index build'.")
    {
        IndexHash = indexHash;
        ModelHash = modelHash;
    }

    /// <summary>Hash stored in the index.</summary>
    public string IndexHash { get; }

    /// <summary>Hash of the model.</summary>
    public string ModelHash { get; }
}
