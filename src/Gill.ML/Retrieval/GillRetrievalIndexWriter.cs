using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Gill.ML.Modules;
using Gill.ML.Stages.VisualFeatures;
using Microsoft.ML;
using Microsoft.ML.Data;
using SkiaSharp;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Retrieval;

/// <summary>
/// Streams vectors and ids into a <see cref="GillRetrievalIndex"/> file: rows are normalised and written as they come
/// (nothing but the ids is kept in memory), the payload is hashed on the way, and the file appears atomically on
/// <see cref="Complete"/> (temporary file, then rename).
/// </summary>
public sealed class GillRetrievalIndexWriter : IDisposable
{
    private readonly string _path;
    private readonly string _tmp;
    private readonly FileStream _stream;
    private readonly IncrementalHash _sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private readonly List<string> _ids = new();
    private readonly byte[] _modelHash;
    private bool _done;

    /// <summary>Starts a new index file at <paramref name="path"/>.</summary>
    public GillRetrievalIndexWriter(string path, int dimension, byte[] modelHash, GillIndexDType dtype = GillIndexDType.Float32)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (dimension <= 0) throw new ArgumentOutOfRangeException(nameof(dimension), dimension, "Must be positive.");
        if (modelHash is null || modelHash.Length != 32) throw new ArgumentException("The model hash must be 32 bytes (SHA-256).", nameof(modelHash));
        _path = System.IO.Path.GetFullPath(path);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(_path)!);
        _tmp = _path + "." + Guid.NewGuid().ToString("N")[..8] + ".tmp";
        _stream = new FileStream(_tmp, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1 << 20);
        _stream.Write(new byte[GillRetrievalIndex.HeaderSize]);
        Dimension = dimension;
        DType = dtype;
        _modelHash = modelHash.ToArray();
    }

    /// <summary>Vector length.</summary>
    public int Dimension { get; }

    /// <summary>Stored element type.</summary>
    public GillIndexDType DType { get; }

    /// <summary>Rows written so far.</summary>
    public long Count => _ids.Count;

    /// <summary>Appends rows [N, dim] (normalised here) with their ids.</summary>
    public void Add(Tensor vectors, IReadOnlyList<string> ids)
    {
        ObjectDisposedException.ThrowIf(_done, this);
        if (vectors.dim() != 2 || vectors.shape[1] != Dimension)
            throw new ArgumentException($"Vectors must be [N, {Dimension}], got {Serialization.SafeTensors.FormatShape(vectors.shape)}.", nameof(vectors));
        if (vectors.shape[0] != ids.Count)
            throw new ArgumentException($"Got {ids.Count} ids for {vectors.shape[0]} vectors.", nameof(ids));
        using var scope = torch.NewDisposeScope();
        var v = vectors.detach().to(ScalarType.Float32).cpu();
        var norm = v.norm(-1, keepdim: true);
        if ((norm <= 0).any().item<bool>() || !v.isfinite().all().item<bool>())
            throw new ArgumentException("A vector is zero or not finite; it cannot be normalised.", nameof(vectors));
        v = (v / norm).contiguous();
        byte[] bytes;
        if (DType == GillIndexDType.Float16)
        {
            var h = v.to(ScalarType.Float16).contiguous();
            var span = h.bytes;
            bytes = span.ToArray();
        }
        else
        {
            bytes = v.bytes.ToArray();
        }
        _stream.Write(bytes);
        _sha.AppendData(bytes);
        foreach (var id in ids) _ids.Add(id ?? throw new ArgumentNullException(nameof(ids), "An id is null."));
    }

    /// <summary>Writes the ids and the header and moves the file into place. Throws for an empty gallery.</summary>
    public void Complete()
    {
        ObjectDisposedException.ThrowIf(_done, this);
        if (_ids.Count == 0) throw new InvalidOperationException($"No images were added to the retrieval index '{_path}' (empty gallery).");
        long idsOffset = _stream.Position;
        var offsets = new byte[(_ids.Count + 1) * 8];
        var blob = new MemoryStream();
        for (int i = 0; i < _ids.Count; i++)
        {
            BinaryPrimitives.WriteInt64LittleEndian(offsets.AsSpan(i * 8), blob.Length);
            var b = Encoding.UTF8.GetBytes(_ids[i]);
            blob.Write(b);
        }
        BinaryPrimitives.WriteInt64LittleEndian(offsets.AsSpan(_ids.Count * 8), blob.Length);
        _stream.Write(offsets);
        _sha.AppendData(offsets);
        var blobBytes = blob.ToArray();
        _stream.Write(blobBytes);
        _sha.AppendData(blobBytes);
        long length = _stream.Position;

        var header = new byte[GillRetrievalIndex.HeaderSize];
        GillRetrievalIndex.Magic.CopyTo(header);
        BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(8), GillRetrievalIndex.FormatVersion);
        BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(12), Dimension);
        BinaryPrimitives.WriteInt64LittleEndian(header.AsSpan(16), _ids.Count);
        BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(24), (int)DType);
        _modelHash.CopyTo(header.AsSpan(32));
        BinaryPrimitives.WriteInt64LittleEndian(header.AsSpan(64), idsOffset);
        BinaryPrimitives.WriteInt64LittleEndian(header.AsSpan(72), length);
        _sha.GetHashAndReset().CopyTo(header.AsSpan(80));
        _stream.Position = 0;
        _stream.Write(header);
        _stream.Flush(true);
        _stream.Dispose();
        File.Move(_tmp, _path, overwrite: true);
        _done = true;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (!_done)
        {
            _done = true;
            _stream.Dispose();
            try { File.Delete(_tmp); } catch (IOException) { }
        }
        _sha.Dispose();
    }
}

/// <summary>Progress of an index build.</summary>
public readonly record struct GillIndexBuildProgress(long Done, long Total);

/// <summary>Builds retrieval galleries from images with a GILL model's W_i2t over a visual encoder's features.</summary>
public static class GillRetrievalIndexBuilder
{
    /// <summary>Image file extensions picked up from a folder.</summary>
    public static IReadOnlySet<string> ImageExtensions { get; } =
        new HashSet<string>(StringComparer.OrdinalIgnoreCase) { ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp" };

    /// <summary>
    /// Indexes every image file under <paramref name="folder"/> (recursively, sorted by path; ids are paths relative to
    /// the folder) and writes <paramref name="indexPath"/>. Returns the number of images.
    /// </summary>
    public static long BuildFromFolder(GillCoreModel model, IVisualEncoder encoder, string folder, string indexPath,
        GillIndexDType dtype = GillIndexDType.Float32, int batchSize = 32, IProgress<GillIndexBuildProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"Image folder '{folder}' does not exist.");
        var files = Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories)
            .Where(f => ImageExtensions.Contains(System.IO.Path.GetExtension(f)))
            .OrderBy(f => f, StringComparer.Ordinal).ToList();
        if (files.Count == 0) throw new InvalidOperationException($"Folder '{folder}' holds no image files ({string.Join(", ", ImageExtensions)}); the gallery would be empty.");
        return Build(model, encoder, files.Select(f => (System.IO.Path.GetRelativePath(folder, f).Replace('\\', '/'), f)).ToList(),
            indexPath, dtype, batchSize, progress, cancellationToken);
    }

    /// <summary>
    /// Indexes the images named by a text column of an <see cref="IDataView"/> (file paths; the id is the path as
    /// written in the column) and writes <paramref name="indexPath"/>.
    /// </summary>
    public static long BuildFromDataView(GillCoreModel model, IVisualEncoder encoder, IDataView data, string pathColumn, string indexPath,
        GillIndexDType dtype = GillIndexDType.Float32, int batchSize = 32, IProgress<GillIndexBuildProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(data);
        var col = data.Schema.GetColumnOrNull(pathColumn)
            ?? throw new ArgumentException($"The data view has no column '{pathColumn}'.", nameof(pathColumn));
        if (col.Type is not TextDataViewType)
            throw new ArgumentException($"Column '{pathColumn}' must be text (image paths), it is {col.Type}.", nameof(pathColumn));
        var paths = new List<(string, string)>();
        using (var cursor = data.GetRowCursor(new[] { col }))
        {
            var getter = cursor.GetGetter<ReadOnlyMemory<char>>(col);
            ReadOnlyMemory<char> value = default;
            while (cursor.MoveNext())
            {
                getter(ref value);
                var p = value.ToString();
                paths.Add((p, p));
            }
        }
        return Build(model, encoder, paths, indexPath, dtype, batchSize, progress, cancellationToken);
    }

    /// <summary>Indexes (id, file) pairs.</summary>
    public static long Build(GillCoreModel model, IVisualEncoder encoder, IReadOnlyList<(string Id, string File)> images, string indexPath,
        GillIndexDType dtype = GillIndexDType.Float32, int batchSize = 32, IProgress<GillIndexBuildProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(encoder);
        if (images.Count == 0) throw new InvalidOperationException("No images to index (empty gallery).");
        if (encoder.FeatureSize != model.Config.VisualHiddenSize)
            throw new ArgumentException($"The visual encoder '{encoder.Name}' gives {encoder.FeatureSize}-d features, the GILL model expects {model.Config.VisualHiddenSize}.");
        using var writer = new GillRetrievalIndexWriter(indexPath, model.Config.RetEmbDim, GillRetrievalIndex.ComputeModelHash(model, encoder), dtype);
        for (int start = 0; start < images.Count; start += batchSize)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var batch = images.Skip(start).Take(batchSize).ToList();
            var bitmaps = new List<SKBitmap>();
            try
            {
                foreach (var (_, file) in batch) bitmaps.Add(Inference.GillImages.DecodeFile(file));
                var enc = encoder.Encode(bitmaps, includeEmbedding: false);
                using var scope = torch.NewDisposeScope();
                using var noGrad = torch.no_grad();
                var feats = torch.tensor(enc.Features, new long[] { enc.Count, enc.FeatureSize });
                var v = model.ImageRetrievalEmbedding(feats);
                writer.Add(v, batch.Select(b => b.Id).ToList());
            }
            finally
            {
                foreach (var b in bitmaps) b.Dispose();
            }
            progress?.Report(new GillIndexBuildProgress(Math.Min(start + batchSize, images.Count), images.Count));
        }
        writer.Complete();
        return images.Count;
    }
}
