using Microsoft.Win32.SafeHandles;
using System.Text;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Serialization;

/// <summary>Description of one tensor stored in a safetensors file.</summary>
public sealed record SafeTensorInfo(string Name, string DType, long[] Shape, long Begin, long End)
{
    /// <summary>The TorchSharp element type of the stored data.</summary>
    public ScalarType ScalarType => SafeTensors.ParseDType(DType, Name);

    /// <summary>Number of elements.</summary>
    public long NumberOfElements => Shape.Aggregate(1L, (a, b) => a * b);

    /// <summary>The shape formatted as <c>[a, b, c]</c>, for messages.</summary>
    public string ShapeText => SafeTensors.FormatShape(Shape);
}

/// <summary>
/// A reader for the safetensors format (8-byte little-endian header length, JSON header, raw data).
/// Tensors are read one at a time with positioned reads straight into their destination tensor's memory (or a bounded
/// chunk when the dtype is converted), so loading never holds two copies of a checkpoint in process memory.
/// </summary>
public sealed class SafeTensorsFile : IDisposable
{
    private readonly SafeFileHandle _handle;
    private readonly long _dataStart;
    private readonly Dictionary<string, SafeTensorInfo> _tensors;

    /// <summary>The file this reader maps.</summary>
    public string Path { get; }

    /// <summary>The tensors in the file, by name.</summary>
    public IReadOnlyDictionary<string, SafeTensorInfo> Tensors => _tensors;

    /// <summary>The optional <c>__metadata__</c> string map.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    private SafeTensorsFile(string path)
    {
        Path = path;
        var length = new FileInfo(path).Length;
        if (length < 8) throw new InvalidDataException($"'{path}' is not a safetensors file: it is only {length} bytes long.");
        _handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);
        try
        {
            Span<byte> lenBytes = stackalloc byte[8];
            ReadExactly(0, lenBytes);
            long headerLen = BitConverter.ToInt64(lenBytes);
            if (headerLen <= 0 || headerLen > length - 8 || headerLen > 100_000_000)
                throw new InvalidDataException($"'{path}' is not a safetensors file: header length {headerLen} is invalid for a file of {length} bytes.");
            var header = new byte[headerLen];
            ReadExactly(8, header);
            _dataStart = 8 + headerLen;
            _tensors = new Dictionary<string, SafeTensorInfo>(StringComparer.Ordinal);
            var meta = new Dictionary<string, string>(StringComparer.Ordinal);
            using var doc = JsonDocument.Parse(header);
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (prop.Name == "__metadata__")
                {
                    foreach (var m in prop.Value.EnumerateObject()) meta[m.Name] = m.Value.ToString();
                    continue;
                }
                var dtype = prop.Value.GetProperty("dtype").GetString() ?? throw new InvalidDataException($"'{path}': tensor '{prop.Name}' has no dtype.");
                var shape = prop.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()).ToArray();
                var offs = prop.Value.GetProperty("data_offsets").EnumerateArray().Select(e => e.GetInt64()).ToArray();
                var info = new SafeTensorInfo(prop.Name, dtype, shape, offs[0], offs[1]);
                long expected = info.NumberOfElements * SafeTensors.ElementSize(dtype, prop.Name);
                if (offs[1] - offs[0] != expected || _dataStart + offs[1] > length)
                    throw new InvalidDataException($"'{path}': tensor '{prop.Name}' ({dtype} {info.ShapeText}) has data offsets [{offs[0]}, {offs[1]}] that do not match its size or the file length.");
                _tensors[prop.Name] = info;
            }
            Metadata = meta;
        }
        catch
        {
            _handle.Dispose();
            throw;
        }
    }

    private void ReadExactly(long offset, Span<byte> buffer)
    {
        while (buffer.Length > 0)
        {
            int n = RandomAccess.Read(_handle, buffer, offset);
            if (n <= 0) throw new EndOfStreamException($"Unexpected end of '{Path}' at byte {offset}.");
            offset += n;
            buffer = buffer[n..];
        }
    }

    /// <summary>Opens a safetensors file for reading.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    public static SafeTensorsFile Open(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Safetensors file not found: '{path}'.", path);
        return new SafeTensorsFile(path);
    }

    /// <summary>Returns the description of a tensor, or throws naming the missing key.</summary>
    public SafeTensorInfo Info(string name) =>
        _tensors.TryGetValue(name, out var info) ? info : throw new KeyNotFoundException($"Tensor '{name}' is not in '{Path}'.");

    /// <summary>Loads one tensor as a new CPU tensor (or on <paramref name="device"/>), converted to <paramref name="dtype"/> when given.</summary>
    public Tensor Load(string name, ScalarType? dtype = null, Device? device = null)
    {
        var info = Info(name);
        var result = torch.empty(info.Shape, dtype ?? info.ScalarType, device ?? CPU);
        CopyTo(name, result);
        return result;
    }

    /// <summary>
    /// Copies a stored tensor into an existing tensor of the same shape (any dtype, any device), in chunks, without
    /// autograd tracking.
    /// </summary>
    public void CopyTo(string name, Tensor destination)
    {
        var info = Info(name);
        if (!destination.shape.SequenceEqual(info.Shape))
            throw new InvalidDataException($"Shape mismatch for '{name}': expected {SafeTensors.FormatShape(destination.shape)}, found {info.ShapeText} in '{Path}'.");
        if (info.NumberOfElements == 0) return;
        using var noGrad = torch.no_grad();
        var srcType = info.ScalarType;
        int elemSize = SafeTensors.ElementSize(info.DType, name);
        bool direct = destination.dtype == srcType && destination.device_type == DeviceType.CPU && destination.is_contiguous();
        using var flatDst = destination.is_contiguous() ? destination.view(-1) : null;
        const long chunkBytes = 64L << 20;
        long chunkElems = Math.Max(1, chunkBytes / elemSize);
        long total = info.NumberOfElements;
        for (long start = 0; start < total; start += chunkElems)
        {
            long n = Math.Min(chunkElems, total - start);
            long byteOffset = _dataStart + info.Begin + start * elemSize;
            if (direct)
            {
                using var slice = flatDst!.narrow(0, start, n);
                ReadInto(byteOffset, slice, n * elemSize);
            }
            else
            {
                using var tmp = torch.empty(new[] { n }, srcType, CPU);
                ReadInto(byteOffset, tmp, n * elemSize);
                if (flatDst is not null)
                {
                    using var slice = flatDst.narrow(0, start, n);
                    slice.copy_(tmp);
                }
                else
                {
                    // Non-contiguous destination: only whole-tensor copies are possible.
                    if (n != total) throw new InvalidOperationException($"Cannot load '{name}' in chunks into a non-contiguous tensor.");
                    destination.copy_(tmp.view(info.Shape));
                }
            }
        }
    }

    private void ReadInto(long fileOffset, Tensor contiguousCpu, long byteCount)
    {
        var span = contiguousCpu.bytes;
        if (span.Length != byteCount) throw new InvalidOperationException("Internal error: chunk size mismatch.");
        ReadExactly(fileOffset, span);
    }

    /// <inheritdoc />
    public void Dispose() => _handle.Dispose();
}

/// <summary>
/// A Hugging Face checkpoint folder: <c>model.safetensors</c>, or shards listed in <c>model.safetensors.index.json</c>.
/// Presents all tensors as one name → file map.
/// </summary>
public sealed class SafeTensorsCheckpoint : IDisposable
{
    private readonly List<SafeTensorsFile> _files = new();
    private readonly Dictionary<string, SafeTensorsFile> _owner = new(StringComparer.Ordinal);

    /// <summary>The folder or file that was opened.</summary>
    public string Source { get; }

    /// <summary>The files that make up the checkpoint.</summary>
    public IReadOnlyList<SafeTensorsFile> Files => _files;

    /// <summary>All tensors by name.</summary>
    public IReadOnlyDictionary<string, SafeTensorInfo> Tensors { get; }

    private SafeTensorsCheckpoint(string source, IEnumerable<string> files)
    {
        Source = source;
        var all = new Dictionary<string, SafeTensorInfo>(StringComparer.Ordinal);
        try
        {
            foreach (var f in files)
            {
                var file = SafeTensorsFile.Open(f);
                _files.Add(file);
                foreach (var (k, v) in file.Tensors)
                {
                    if (!all.TryAdd(k, v)) throw new InvalidDataException($"Tensor '{k}' appears in more than one shard of '{source}'.");
                    _owner[k] = file;
                }
            }
        }
        catch
        {
            Dispose();
            throw;
        }
        Tensors = all;
    }

    /// <summary>
    /// Opens a checkpoint from a folder (<c>model.safetensors</c> or <c>model.safetensors.index.json</c>) or from a
    /// single <c>.safetensors</c> file.
    /// </summary>
    public static SafeTensorsCheckpoint Open(string folderOrFile)
    {
        if (File.Exists(folderOrFile)) return new SafeTensorsCheckpoint(folderOrFile, new[] { folderOrFile });
        if (!Directory.Exists(folderOrFile))
            throw new DirectoryNotFoundException($"Checkpoint folder not found: '{folderOrFile}'.");
        var single = System.IO.Path.Combine(folderOrFile, "model.safetensors");
        if (File.Exists(single)) return new SafeTensorsCheckpoint(folderOrFile, new[] { single });
        var index = System.IO.Path.Combine(folderOrFile, "model.safetensors.index.json");
        if (File.Exists(index))
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(index));
            if (!doc.RootElement.TryGetProperty("weight_map", out var map))
                throw new InvalidDataException($"'{index}' has no 'weight_map'.");
            var shards = map.EnumerateObject().Select(p => p.Value.GetString()!).Distinct().OrderBy(s => s, StringComparer.Ordinal)
                .Select(s => System.IO.Path.Combine(folderOrFile, s)).ToList();
            foreach (var s in shards)
                if (!File.Exists(s)) throw new FileNotFoundException($"Shard '{s}' listed in '{index}' is missing.", s);
            return new SafeTensorsCheckpoint(folderOrFile, shards);
        }
        throw new FileNotFoundException($"No model.safetensors or model.safetensors.index.json in '{folderOrFile}'.");
    }

    /// <summary>Loads one tensor (see <see cref="SafeTensorsFile.Load"/>).</summary>
    public Tensor Load(string name, ScalarType? dtype = null, Device? device = null) => FileOf(name).Load(name, dtype, device);

    /// <summary>Copies one tensor into an existing tensor (see <see cref="SafeTensorsFile.CopyTo"/>).</summary>
    public void CopyTo(string name, Tensor destination) => FileOf(name).CopyTo(name, destination);

    /// <summary>True when the checkpoint holds a tensor of that name.</summary>
    public bool Contains(string name) => _owner.ContainsKey(name);

    private SafeTensorsFile FileOf(string name) =>
        _owner.TryGetValue(name, out var f) ? f : throw new KeyNotFoundException($"Tensor '{name}' is not in checkpoint '{Source}'.");

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
        _files.Clear();
    }
}

/// <summary>Helpers for the safetensors format: dtype names and an atomic writer.</summary>
public static class SafeTensors
{
    internal static ScalarType ParseDType(string dtype, string name) => dtype switch
    {
        "F32" => ScalarType.Float32,
        "F16" => ScalarType.Float16,
        "BF16" => ScalarType.BFloat16,
        "F64" => ScalarType.Float64,
        "I64" => ScalarType.Int64,
        "I32" => ScalarType.Int32,
        "I16" => ScalarType.Int16,
        "I8" => ScalarType.Int8,
        "U8" => ScalarType.Byte,
        "BOOL" => ScalarType.Bool,
        _ => throw new NotSupportedException($"Tensor '{name}' has safetensors dtype '{dtype}', which is not supported."),
    };

    internal static int ElementSize(string dtype, string name) => dtype switch
    {
        "F64" or "I64" => 8,
        "F32" or "I32" => 4,
        "F16" or "BF16" or "I16" => 2,
        "I8" or "U8" or "BOOL" => 1,
        _ => throw new NotSupportedException($"Tensor '{name}' has safetensors dtype '{dtype}', which is not supported."),
    };

    internal static string DTypeName(ScalarType t) => t switch
    {
        ScalarType.Float32 => "F32",
        ScalarType.Float16 => "F16",
        ScalarType.BFloat16 => "BF16",
        ScalarType.Float64 => "F64",
        ScalarType.Int64 => "I64",
        ScalarType.Int32 => "I32",
        ScalarType.Int16 => "I16",
        ScalarType.Int8 => "I8",
        ScalarType.Byte => "U8",
        ScalarType.Bool => "BOOL",
        _ => throw new NotSupportedException($"Element type {t} cannot be written to safetensors."),
    };

    /// <summary>Formats a shape as <c>[a, b]</c>.</summary>
    public static string FormatShape(IEnumerable<long> shape) => "[" + string.Join(", ", shape) + "]";

    /// <summary>
    /// Writes tensors to a safetensors file atomically (a temporary file in the same folder, then a rename).
    /// Tensors are written in the given order; each is copied to CPU contiguous memory one at a time.
    /// </summary>
    public static void Save(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.ToList();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (k, _) in list)
            if (!seen.Add(k)) throw new ArgumentException($"Duplicate tensor name '{k}'.", nameof(tensors));
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                w.WriteStartObject("__metadata__");
                foreach (var (k, v) in metadata) w.WriteString(k, v);
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (var (k, t) in list)
            {
                long bytes = t.NumberOfElements * t.ElementSize;
                w.WriteStartObject(k);
                w.WriteString("dtype", DTypeName(t.dtype));
                w.WriteStartArray("shape");
                foreach (var d in t.shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + bytes);
                w.WriteEndArray();
                w.WriteEndObject();
                offset += bytes;
            }
            w.WriteEndObject();
        }
        var header = ms.ToArray();
        int pad = (int)((8 - header.Length % 8) % 8);
        var dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!;
        Directory.CreateDirectory(dir);
        var tmp = System.IO.Path.Combine(dir, "." + System.IO.Path.GetFileName(path) + "." + Guid.NewGuid().ToString("N") + ".tmp");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                Span<byte> len = stackalloc byte[8];
                BitConverter.TryWriteBytes(len, (long)(header.Length + pad));
                fs.Write(len);
                fs.Write(header);
                for (int i = 0; i < pad; i++) fs.WriteByte((byte)' ');
                foreach (var (_, t) in list)
                {
                    if (t.NumberOfElements == 0) continue;
                    using var scope = torch.NewDisposeScope();
                    using var noGrad = torch.no_grad();
                    var cpu = t.detach().cpu().contiguous().view(-1);
                    long total = cpu.NumberOfElements;
                    long chunk = Math.Max(1, (64L << 20) / t.ElementSize);
                    for (long s = 0; s < total; s += chunk)
                    {
                        using var part = cpu.narrow(0, s, Math.Min(chunk, total - s));
                        fs.Write(part.bytes);
                    }
                }
                fs.Flush(true);
            }
            File.Move(tmp, path, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { }
            throw;
        }
    }

    /// <summary>Reads every tensor of a small file into memory (for inputs/outputs files, not for checkpoints).</summary>
    public static Dictionary<string, Tensor> LoadAll(string path, ScalarType? dtype = null)
    {
        using var f = SafeTensorsFile.Open(path);
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var name in f.Tensors.Keys) result[name] = f.Load(name, dtype is not null && IsFloating(f.Tensors[name].ScalarType) ? dtype : null);
        return result;
    }

    internal static bool IsFloating(ScalarType t) => t is ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float32 or ScalarType.Float64;
}
